//! Shared harness for the end-to-end tests: the real `keepwire` binary,
//! real sockets, real stores in a temporary directory — or, inside
//! [`on_postgres`], the server's store in PostgreSQL.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod rogue;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_keepwire");

thread_local! {
    static POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static CLOCK: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Every process the running test starts from now on — servers, records
/// services, devices, commands — runs on the controllable clock in `path`
/// (`KEEPWIRE_CLOCK_FILE`, an offset in milliseconds): writing a new
/// offset moves time for all of them at once.
pub fn use_clock(path: &Path) {
    CLOCK.with(|c| *c.borrow_mut() = Some(path.to_path_buf()));
}

/// The clock offset (milliseconds from now) that makes it noon UTC on
/// `day` (`YYYY-MM-DD`, in the future).
pub fn offset_to(day: &str) -> u64 {
    let target = day
        .parse::<keepwire_records::lifecycle::dates::Day>()
        .unwrap()
        .start_ms()
        + 12 * 3_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    target.checked_sub(now).expect("the test's dates are ahead")
}

fn clock_env(cmd: &mut Command) {
    if let Some(p) = CLOCK.with(|c| c.borrow().clone()) {
        cmd.env("KEEPWIRE_CLOCK_FILE", p);
    }
}

/// Run `test` with every agency it starts keeping the server's store and
/// the archive in PostgreSQL (`--database`, `--records-database`), each in
/// a scratch schema of its own on the test server
/// (`KEEPWIRE_TEST_POSTGRES`): the same test on the other backend.
pub fn on_postgres(test: fn()) {
    POSTGRES.with(|p| p.set(true));
    test();
}

/// A scratch PostgreSQL database when the running test is on PostgreSQL.
fn scratch_database() -> Option<keepwire_schema::pg::scratch::Scratch> {
    POSTGRES.with(|p| p.get()).then(|| {
        keepwire_schema::pg::scratch::Scratch::new()
            .expect("a PostgreSQL server for the tests (KEEPWIRE_TEST_POSTGRES)")
    })
}

/// `keepwire` as the tests run it: servers serve no admin endpoints
/// unless a test asks (`--admin-listen`), so that many can run at once.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    clock_env(&mut cmd);
    cmd.env("KEEPWIRE_ADMIN_LISTEN", "off");
    // The records office on a port of its own; `records` commands find it
    // through the records directory.
    cmd.env("KEEPWIRE_RECORDS_LISTEN", "127.0.0.1:0");
    cmd
}

/// The archive's admin in the tests, and its password.
pub const KEEPER: (&str, &str) = ("keeper", "the keeper's long passphrase");
/// The archive's records officer in the tests, and its password.
pub const OFFICER: (&str, &str) = ("officer", "the officer's long passphrase");

/// The env signing a command in as `who` ([`KEEPER`], [`OFFICER`]).
pub fn signed_in(who: (&'static str, &'static str)) -> [(&'static str, &'static str); 2] {
    [
        ("KEEPWIRE_RECORDS_USER", who.0),
        ("KEEPWIRE_RECORDS_PASSWORD", who.1),
    ]
}

/// Make [`KEEPER`] (with the setup token) and [`OFFICER`] (by the keeper)
/// on the archive the running records office of `place` (`--data-dir D`
/// and, on PostgreSQL, `--database URL`) keeps, unless it has accounts.
pub fn make_accounts(place: &[&str]) {
    let dir = Path::new(place[place.iter().position(|a| *a == "--data-dir").unwrap() + 1])
        .join("records");
    // The office writes the setup token (while there is no account)
    // before it says where it is.
    wait_for("the records office", 60, || {
        dir.join("office.url").exists().then_some(())
    });
    if !dir.join("setup.token").exists() {
        return;
    }
    let keeper = [("KEEPWIRE_RECORDS_NEW_PASSWORD", KEEPER.1)];
    let mut add = vec!["records", "account", "add", KEEPER.0, "--role", "admin"];
    add.extend_from_slice(place);
    ok(keepwire(&add, &keeper));
    let mut add = vec![
        "records",
        "account",
        "add",
        OFFICER.0,
        "--role",
        "records-officer",
    ];
    add.extend_from_slice(place);
    let [user, password] = signed_in(KEEPER);
    ok(keepwire(
        &add,
        &[user, password, ("KEEPWIRE_RECORDS_NEW_PASSWORD", OFFICER.1)],
    ));
}

/// `keepwire records office` on the archive in `data_dir`, until dropped;
/// returns once it listens.
pub fn start_office(data_dir: &str) -> Office {
    start_office_at(&["--data-dir", data_dir])
}

/// [`start_office`] on the archive at `place` (`--data-dir D` and, on
/// PostgreSQL, `--database URL`).
pub fn start_office_at(place: &[&str]) -> Office {
    let data_dir = place[place.iter().position(|a| *a == "--data-dir").unwrap() + 1];
    let dir = Path::new(data_dir).join("records");
    // A copied archive may hold the URL of an office long gone.
    let _ = std::fs::remove_file(dir.join("office.url"));
    let child = command()
        .args(["records", "office"])
        .args(place)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let office = Office(child);
    wait_for("the records office", 60, || {
        dir.join("office.url").exists().then_some(())
    });
    office
}

/// A running `keepwire records office`, stopped when dropped.
pub struct Office(pub Child);

impl Drop for Office {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Who a `records` command signs in as, unless the test says: the admin
/// for accounts and keys, the records officer for records and
/// checkpoints, nobody for what opens the archive itself.
fn signs_in_as(args: &[&str]) -> Option<(&'static str, &'static str)> {
    match args.first().copied() {
        Some("key") if args.get(1) == Some(&"status") => None,
        Some("account" | "key" | "rotate-key") => Some(KEEPER),
        Some(
            "show" | "attachment" | "destroy" | "checkpoint" | "schedule" | "directory" | "na1005"
            | "disposition" | "hold" | "incident" | "report",
        ) => Some(OFFICER),
        _ => None,
    }
}

pub fn keepwire(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run keepwire")
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "keepwire failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Poll `f` until it returns `Some`, failing the test after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub listen: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(listen: &str) {
    wait_for("the server to listen", 30, || {
        std::net::TcpStream::connect(listen).ok()
    });
}

/// Spawn `keepwire ARGS` with its log appended to `log_path`, and wait
/// until the log shows `ready` (from this start on).
pub fn spawn_logged(args: &[&str], log_path: &Path, ready: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let start = std::fs::metadata(log_path).unwrap().len() as usize;
    let mut child = command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let began = Instant::now();
    loop {
        let text = log_after(log_path, start);
        if text.contains(ready) {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} exited ({status}) before `{ready}`:\n{text}");
        }
        if began.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{args:?}: no `{ready}` within a minute:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a log that appeared after the first `skip` bytes.
pub fn log_after(log_path: &Path, skip: usize) -> String {
    let text = std::fs::read(log_path).unwrap_or_default();
    String::from_utf8_lossy(&text[skip.min(text.len())..]).to_string()
}

/// `keepwire serve` (server and records service in one process); returns
/// once it says it is serving, which it does only after the records member
/// is enrolled. Its log goes to `serve.log` next to the data directory.
pub fn start_serve(dir: &Path, listen: &str, extra: &[&str]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec![
        "serve",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        listen,
    ];
    args.extend_from_slice(extra);
    let child = spawn_logged(
        &args,
        &dir.with_file_name("serve.log"),
        "keepwire serving on",
    );
    wait_listening(listen);
    Server {
        child,
        url: format!("http://{listen}"),
        listen: listen.to_string(),
    }
}

/// An agency: a data directory, a running server, and its devices.
pub struct Agency {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub server: Option<Server>,
    pub listen: String,
    /// `keepwire records serve`, when the two halves run apart.
    pub records: Option<Child>,
    /// The server's store, when it is in PostgreSQL (dropped last, after
    /// the processes using it).
    pub database: Option<keepwire_schema::pg::scratch::Scratch>,
    /// The archive, when it is in PostgreSQL.
    pub records_database: Option<keepwire_schema::pg::scratch::Scratch>,
    /// Flags every start of `keepwire records serve` gets.
    pub records_args: Vec<String>,
}

impl Drop for Agency {
    fn drop(&mut self) {
        self.stop_records();
    }
}

impl Agency {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut agency = Self {
            tmp,
            data,
            server: None,
            listen,
            records: None,
            database: scratch_database(),
            records_database: scratch_database(),
            records_args: Vec::new(),
        };
        agency.restart(extra);
        agency
    }

    /// `args` and `--database URL` when the server's store is in PostgreSQL
    /// (for `server` and `admin`).
    pub fn with_database<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if let Some(db) = &self.database {
            all.extend_from_slice(&["--database", &db.url]);
        }
        all
    }

    /// `args` and `--database URL` when the archive is in PostgreSQL (for
    /// `records`).
    pub fn with_records_database<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if let Some(db) = &self.records_database {
            all.extend_from_slice(&["--database", &db.url]);
        }
        all
    }

    /// `keepwire records ARGS` on this agency's archive, succeeding or not.
    pub fn records_output(&self, args: &[&str]) -> Output {
        self.records_output_env(args, &[])
    }

    /// The same, with `env` set (passwords, a token). Unless `args` or
    /// `env` sign in, a command that acts signs in as [`KEEPER`] or
    /// [`OFFICER`] ([`signs_in_as`]), made first if need be
    /// ([`Agency::accounts`]).
    pub fn records_output_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["records"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", self.data_dir()]);
        let mut env = env.to_vec();
        let signed =
            args.contains(&"--as") || env.iter().any(|(k, _)| *k == "KEEPWIRE_RECORDS_USER");
        if let (false, Some((name, password))) = (signed, signs_in_as(args)) {
            self.accounts();
            env.extend([
                ("KEEPWIRE_RECORDS_USER", name),
                ("KEEPWIRE_RECORDS_PASSWORD", password),
            ]);
        }
        keepwire(&self.with_records_database(&all), &env)
    }

    /// The archive's test accounts, [`KEEPER`] (admin) and [`OFFICER`]
    /// (records officer), made with the setup token while the archive has
    /// none: the records service must be running then.
    pub fn accounts(&self) {
        let made = self.tmp.path().join("accounts-made");
        if made.exists() {
            return;
        }
        make_accounts(&self.with_records_database(&["--data-dir", self.data_dir()]));
        std::fs::write(&made, b"").unwrap();
    }

    /// `keepwire records office` on this agency's archive, until dropped
    /// (the agency stopped).
    pub fn office(&self) -> Office {
        start_office_at(&self.with_records_database(&["--data-dir", self.data_dir()]))
    }

    /// `keepwire records office ARGS` on this agency's archive when it
    /// must not open: how it ended. An office that opens after all fails
    /// the test (and is stopped).
    pub fn office_refused(&self, args: &[&str]) -> Output {
        let url = self.data.join("records").join("office.url");
        let _ = std::fs::remove_file(&url);
        let mut all = vec!["records", "office", "--data-dir", self.data_dir()];
        all.extend_from_slice(args);
        let mut child = command()
            .args(self.with_records_database(&all))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let opened = wait_for("the records office to end", 60, || {
            if url.exists() {
                return Some(true);
            }
            child.try_wait().unwrap().map(|_| false)
        });
        if opened {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        assert!(!opened, "the records office opened: {}", stderr(&out));
        out
    }

    /// alice and bob, staff; alice has accepted the records notice and
    /// made a conversation with bob. Returns alice and the conversation.
    pub fn alice_and_bob(&self) -> (Device, String) {
        let alice = self.user("alice", "staff");
        self.user("bob", "staff");
        alice.accept_notice();
        let conv = alice.create(&["bob"]);
        (alice, conv)
    }

    /// The data of the archive's leaves of `kind` (`record`, `action`, …),
    /// read from its store directly.
    pub fn leaves(&self, kind: &str) -> Vec<String> {
        let as_text = |d: Vec<u8>| String::from_utf8_lossy(&d).into_owned();
        match &self.records_database {
            Some(db) => keepwire_schema::pg::Pg::connect(&db.url)
                .and_then(|pg| {
                    pg.query(
                        "SELECT data FROM tlog_leaves WHERE kind = $1 ORDER BY n",
                        &[&kind],
                    )
                })
                .map(|rows| rows.iter().map(|r| as_text(r.get(0))).collect())
                .unwrap_or_default(),
            None => {
                let Ok(conn) = rusqlite::Connection::open_with_flags(
                    self.data.join("records").join("archive.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                ) else {
                    return Vec::new();
                };
                let Ok(mut stmt) =
                    conn.prepare("SELECT data FROM tlog_leaves WHERE kind = ?1 ORDER BY n")
                else {
                    return Vec::new();
                };
                stmt.query_map([kind], |r| r.get::<_, Vec<u8>>(0))
                    .map(|rows| rows.filter_map(Result::ok).map(as_text).collect())
                    .unwrap_or_default()
            }
        }
    }

    /// The archive log's size, and the largest size a checkpoint it signed
    /// covers — read from its store directly.
    pub fn log_and_checkpoint_sizes(&self) -> (i64, i64) {
        const LEAVES: &str = "SELECT COUNT(*) FROM tlog_leaves";
        const COVERED: &str = "SELECT COALESCE(MAX(size), 0) FROM checkpoints";
        match &self.records_database {
            Some(db) => {
                let pg = keepwire_schema::pg::Pg::connect(&db.url).unwrap();
                let one = |q: &'static str| -> i64 { pg.query(q, &[]).unwrap()[0].get(0) };
                (one(LEAVES), one(COVERED))
            }
            None => {
                let conn = rusqlite::Connection::open_with_flags(
                    self.data.join("records").join("archive.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let one = |q: &str| -> i64 { conn.query_row(q, [], |r| r.get(0)).unwrap() };
                (one(LEAVES), one(COVERED))
            }
        }
    }

    /// `keepwire server` and `keepwire records serve` as two processes.
    pub fn start_split(server_args: &[&str]) -> Self {
        Self::start_split_with(server_args, &[])
    }

    /// As [`Agency::start_split`], with flags for `records serve` too.
    pub fn start_split_with(server_args: &[&str], records_args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let listen = format!("127.0.0.1:{}", free_port());
        let log = tmp.path().join("server.log");
        let database = scratch_database();
        let records_database = scratch_database();
        let mut args = vec![
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        args.extend_from_slice(server_args);
        if let Some(db) = &database {
            args.extend_from_slice(&["--database", &db.url]);
        }
        let child = spawn_logged(&args, &log, "keepwire server on");
        let text = log_after(&log, 0);
        let code = text
            .lines()
            .find_map(|l| l.strip_prefix("records service enrolment code: "))
            .expect("the server prints the records enrolment code")
            .trim()
            .to_string();
        let mut agency = Self {
            tmp,
            data,
            server: Some(Server {
                child,
                url: format!("http://{listen}"),
                listen: listen.clone(),
            }),
            listen,
            records: None,
            database,
            records_database,
            records_args: records_args.iter().map(|a| a.to_string()).collect(),
        };
        agency.start_records(Some(&code));
        agency
    }

    pub fn start_records(&mut self, code: Option<&str>) {
        let url = self.url();
        let dir = self.data.join("records");
        // The data directory names the key directory (beside it).
        let mut args = vec![
            "records",
            "serve",
            "--server",
            &url,
            "--records-dir",
            dir.to_str().unwrap(),
            "--data-dir",
            self.data.to_str().unwrap(),
        ];
        if let Some(c) = code {
            args.extend_from_slice(&["--code", c]);
        }
        args.extend(self.records_args.iter().map(String::as_str));
        let args = self.with_records_database(&args);
        let log = self.tmp.path().join("records.log");
        self.records = Some(spawn_logged(&args, &log, "records service running"));
    }

    pub fn stop_records(&mut self) {
        if let Some(mut c) = self.records.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freeze the records service (SIGSTOP) wherever it is, mid-batch
    /// included, or let it go on (SIGCONT).
    pub fn pause_records(&self, paused: bool) {
        let pid = self.records.as_ref().expect("records service apart").id();
        let sig = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: sends a signal to our own child process; no memory involved.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn data_dir(&self) -> &str {
        self.data.to_str().unwrap()
    }

    /// The records service's key directory: by default beside the data
    /// directory, never in it.
    pub fn key_dir(&self) -> PathBuf {
        self.data.with_file_name("data.keys")
    }

    pub fn admin(&self, args: &[&str]) -> String {
        ok(self.admin_output(args))
    }

    /// `keepwire admin ARGS` on this agency, succeeding or not.
    pub fn admin_output(&self, args: &[&str]) -> Output {
        let mut all = self.with_database(&["admin", "--data-dir", self.data_dir()]);
        all.extend_from_slice(args);
        keepwire(&all, &[])
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.admin(&["status", "--json"])).unwrap()
    }

    /// Create a user and enrol its first device (named like the user).
    pub fn user(&self, name: &str, category: &str) -> Device {
        let code = self.admin(&[
            "user",
            "add",
            name,
            "--display",
            name,
            "--category",
            category,
        ]);
        self.enroll(name, code.trim())
    }

    /// Enrol another device of an existing user.
    pub fn second_device(&self, user: &str, dir_name: &str) -> Device {
        let code = self.admin(&["user", "code", user]);
        self.enroll(dir_name, code.trim())
    }

    fn enroll(&self, dir_name: &str, code: &str) -> Device {
        let dev = Device {
            dir: self.tmp.path().join("devices").join(dir_name),
            url: self.url(),
            passphrase: format!("pass-{dir_name}"),
            clock_file: None,
            id: String::new(),
        };
        let out: Value =
            serde_json::from_str(&dev.ok(&["chat", "enroll", "--code", code, "--json"])).unwrap();
        Device {
            id: out["device_id"].as_str().unwrap().to_string(),
            ..dev
        }
    }

    /// Captured records (messages only unless `all`).
    pub fn records(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["list", "--json"];
        if all {
            args.push("--all");
        }
        let v: Value = serde_json::from_str(&ok(self.records_output(&args))).unwrap();
        v.as_array().unwrap().clone()
    }

    pub fn record_text(&self, id: &Value) -> String {
        let id = id.as_i64().unwrap().to_string();
        let v: Value =
            serde_json::from_str(&ok(self.records_output(&["show", &id, "--json"]))).unwrap();
        v["text"].as_str().unwrap_or_default().to_string()
    }

    /// Wait until the archive holds `n` message records; returns their texts.
    pub fn wait_captured(&self, n: usize) -> Vec<String> {
        let records = wait_for(&format!("{n} captured messages"), 60, || {
            let r = self.records(false);
            (r.len() >= n).then_some(r)
        });
        records.iter().map(|r| self.record_text(&r["id"])).collect()
    }

    pub fn stop(&mut self) {
        self.server = None;
    }

    pub fn restart(&mut self, extra: &[&str]) {
        self.server = None;
        let mut args = self.with_database(extra);
        if let Some(db) = &self.records_database {
            args.extend_from_slice(&["--records-database", &db.url]);
        }
        let server = start_serve(&self.data, &self.listen, &args);
        self.server = Some(server);
        if self.database.is_some() {
            assert!(
                !self.data.join("server.db").exists()
                    && !self.data.join("records").join("archive.db").exists(),
                "with --database the store and the archive are in PostgreSQL, not the data directory"
            );
            let status = self.status();
            let store = status["store"].as_str().unwrap_or_default();
            assert!(store.starts_with("PostgreSQL "), "{status}");
            assert!(!store.contains("password"), "{status}");
        }
    }
}

#[derive(Clone)]
pub struct Device {
    pub dir: PathBuf,
    pub url: String,
    pub passphrase: String,
    /// `KEEPWIRE_CLOCK_FILE` for this device's processes (controllable clock).
    pub clock_file: Option<PathBuf>,
    pub id: String,
}

impl Device {
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("KEEPWIRE_PASSPHRASE", &self.passphrase)
            .env("KEEPWIRE_SERVER", &self.url)
            .env("KEEPWIRE_DEVICE_DIR", &self.dir);
        clock_env(&mut cmd);
        if let Some(c) = &self.clock_file {
            cmd.env("KEEPWIRE_CLOCK_FILE", c);
        }
        cmd.output().expect("run keepwire")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.run(args))
    }

    /// Run a command and read the peak resident memory its process
    /// reached (in bytes), from the kernel's own account of the child
    /// (`wait4`'s `ru_maxrss`): the output and the peak.
    // The child is waited for, by wait4 (std's `wait` cannot give its
    // resource usage), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn run_measured(&self, args: &[&str]) -> (Output, u64) {
        use std::io::Read;
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("KEEPWIRE_PASSPHRASE", &self.passphrase)
            .env("KEEPWIRE_SERVER", &self.url)
            .env("KEEPWIRE_DEVICE_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clock_env(&mut cmd);
        if let Some(c) = &self.clock_file {
            cmd.env("KEEPWIRE_CLOCK_FILE", c);
        }
        let mut child = cmd.spawn().expect("run keepwire");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            err.read_to_end(&mut v).map(|_| v)
        });
        let mut stdout = Vec::new();
        out.read_to_end(&mut stdout).unwrap();
        let stderr = err_reader.join().unwrap().unwrap();
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten,
        // and the pid is our own child, not yet waited for.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
        use std::os::unix::process::ExitStatusExt;
        let output = Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout,
            stderr,
        };
        // Linux gives ru_maxrss in KiB.
        (output, usage.ru_maxrss as u64 * 1024)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    pub fn accept_notice(&self) {
        self.ok(&["chat", "notice", "--accept"]);
    }

    pub fn create(&self, users: &[&str]) -> String {
        let mut args = vec!["chat", "create"];
        args.extend_from_slice(users);
        self.json(&args)["conv"].as_str().unwrap().to_string()
    }

    /// Send, and wait until the records service has captured it (then,
    /// and only then, the others can receive it).
    pub fn send(&self, conv: &str, text: &str) -> u64 {
        let out = self.json(&["chat", "send", conv, text, "--wait-captured", "60"]);
        assert_eq!(out["captured"], true, "{out}");
        out["seq"].as_u64().unwrap()
    }

    /// Texts of the messages this device holds for `conv`, in order.
    pub fn read(&self, conv: &str) -> Vec<Value> {
        self.json(&["chat", "read", conv])
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn texts(&self, conv: &str) -> Vec<String> {
        self.read(conv)
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn members(&self, conv: &str) -> Vec<String> {
        let list = self.json(&["chat", "conversations"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["conv"] == conv)
            .map(|c| {
                c["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}
