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

/// The records office off loopback: refused without TLS; with it, an
/// officer's password crosses the network only inside TLS, and a command
/// that does not trust the agency's CA sends nothing.
#[test]
fn the_records_office_off_loopback_is_reached_only_through_tls() {
    let tmp = tempfile::tempdir().unwrap();
    make_pki(tmp.path());
    let office_on = format!("0.0.0.0:{}", free_port());
    let out = keepwire(
        &[
            "serve",
            "--data-dir",
            tmp.path().join("plain").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--records-listen",
            &office_on,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("requires --records-tls-cert and --records-tls-key"),
        "{}",
        stderr(&out)
    );

    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let pem = |f: &str| tmp.path().join(f).to_str().unwrap().to_string();
    let mut server = spawn_logged(
        &[
            "serve",
            "--data-dir",
            d,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--records-listen",
            &office_on,
            "--records-tls-cert",
            &pem("server.pem"),
            "--records-tls-key",
            &pem("server.key"),
        ],
        &tmp.path().join("serve.log"),
        "keepwire serving on",
    );
    let port = office_on.rsplit(':').next().unwrap();
    // The office says where it listens once it does.
    let url = common::wait_for("the records office's url", 60, || {
        std::fs::read_to_string(data.join("records/office.url"))
            .ok()
            .filter(|u| u.ends_with(port))
    });
    assert_eq!(url.trim(), format!("https://127.0.0.1:{port}"));

    let ca = pem("ca.pem");
    let keeper = [
        (
            "KEEPWIRE_RECORDS_NEW_PASSWORD",
            "the keeper's long passphrase",
        ),
        ("KEEPWIRE_RECORDS_PASSWORD", "the keeper's long passphrase"),
    ];
    let records = |args: &[&str], trust: bool| {
        let mut all = vec!["records"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", d]);
        if trust {
            all.extend_from_slice(&["--records-ca-cert", &ca]);
        }
        keepwire(&all, &keeper)
    };
    // Not trusting the agency's CA, the command stops at the handshake.
    let out = records(&["account", "add", "keeper", "--role", "admin"], false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    ok(records(
        &["account", "add", "keeper", "--role", "admin"],
        true,
    ));
    let cp: serde_json::Value = serde_json::from_str(&ok(records(
        &["checkpoint", "--as", "keeper", "--json"],
        true,
    )))
    .unwrap();
    assert!(
        cp["tree_size"].as_u64().unwrap() >= 1,
        "the account's creation is in the log, covered: {cp}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
