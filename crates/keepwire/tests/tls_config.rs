//! End-to-end: TLS for non-loopback listeners, and the TOML config file.

mod common;

use std::path::Path;

use common::{free_port, keepwire, ok, spawn_logged, stderr};

/// A CA and a server certificate for localhost / 127.0.0.1 issued by it.
fn make_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
}

#[test]
fn a_non_loopback_address_needs_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keepwire(
        &[
            "serve",
            "--data-dir",
            tmp.path().join("d").to_str().unwrap(),
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("requires --tls-cert and --tls-key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serves_over_tls_configured_from_a_toml_file() {
    let tmp = tempfile::tempdir().unwrap();
    make_pki(tmp.path());
    let port = free_port();
    let data = tmp.path().join("data");
    let config = tmp.path().join("keepwire.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"0.0.0.0:{port}\"\ntls_cert = {:?}\ntls_key = {:?}\nmax_capture_backlog = 50\n",
            data.to_str().unwrap(),
            tmp.path().join("server.pem").to_str().unwrap(),
            tmp.path().join("server.key").to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut server = spawn_logged(
        &["serve", "--config", config.to_str().unwrap()],
        &tmp.path().join("serve.log"),
        "keepwire serving on https://",
    );

    let d = data.to_str().unwrap();
    let code = ok(keepwire(
        &[
            "admin",
            "--data-dir",
            d,
            "user",
            "add",
            "alice",
            "--display",
            "A",
            "--category",
            "staff",
        ],
        &[],
    ));
    let url = format!("https://localhost:{port}");
    let device = tmp.path().join("alice");
    let env = [
        ("KEEPWIRE_PASSPHRASE", "p"),
        ("KEEPWIRE_SERVER", url.as_str()),
        ("KEEPWIRE_DEVICE_DIR", device.to_str().unwrap()),
    ];
    // Without the agency's CA the certificate is not trusted.
    let untrusted = keepwire(&["chat", "enroll", "--code", code.trim()], &env);
    assert!(!untrusted.status.success());
    let msg = stderr(&untrusted);
    assert!(
        msg.contains("cannot connect") && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );

    let ca = tmp.path().join("ca.pem");
    let trusted = [
        env[0],
        env[1],
        env[2],
        ("KEEPWIRE_CA_CERT", ca.to_str().unwrap()),
    ];
    ok(keepwire(
        &["chat", "enroll", "--code", code.trim()],
        &trusted,
    ));
    ok(keepwire(&["chat", "notice", "--accept"], &trusted));
    // A conversation needs the embedded records member, which reaches the
    // server over its own loopback listener.
    let created = ok(keepwire(&["chat", "create", "--json"], &trusted));
    let conv = serde_json::from_str::<serde_json::Value>(&created).unwrap()["conv"]
        .as_str()
        .unwrap()
        .to_string();
    ok(keepwire(&["chat", "send", &conv, "over tls"], &trusted));
    let records = common::wait_for("capture over TLS", 30, || {
        let v: serde_json::Value = serde_json::from_str(&ok(keepwire(
            &["records", "list", "--data-dir", d, "--json"],
            &[],
        )))
        .unwrap();
        (v.as_array().unwrap().len() == 1).then_some(v)
    });
    assert!(records[0]["sender"].as_str().unwrap().starts_with("alice/"));

    // An unknown key in the file is a clear error, not silently ignored.
    std::fs::write(&config, "lisen = \"0.0.0.0:1\"\n").unwrap();
    let bad = keepwire(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unknown setting `lisen`"),
        "{}",
        stderr(&bad)
    );
    let _ = server.kill();
    let _ = server.wait();
}
