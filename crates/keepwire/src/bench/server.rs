//! The server under test: `keepwire serve` (delivery server and records
//! service, the embedded default) as a child process with its own data
//! directory, so its CPU time and memory are read from /proc apart from
//! the load generator's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keepwire_protocol::clock::Clock;

pub struct ServerProc {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    log: PathBuf,
}

/// With `keepwire bench --database URL`, each server under test keeps its
/// store and its archive in PostgreSQL, in two schemas of their own on
/// that server made for its data directory and dropped when the run ends.
static DATABASE: std::sync::Mutex<Option<Databases>> = std::sync::Mutex::new(None);

struct Databases {
    base: String,
    per_dir: std::collections::HashMap<PathBuf, (Scratch, Scratch)>,
}

use keepwire_schema::pg::scratch::Scratch;

/// Keep every server's store and archive in PostgreSQL at `base` from now
/// on (`None`: SQLite in the data directory again, and the schemas made so
/// far are dropped).
pub fn use_database(base: Option<String>) {
    *DATABASE.lock().unwrap_or_else(|p| p.into_inner()) = base.map(|base| Databases {
        base,
        per_dir: Default::default(),
    });
}

/// The (server store, archive) databases of the server in `data_dir`,
/// when the run is on PostgreSQL.
pub fn databases(data_dir: &Path) -> Result<Option<(String, String)>> {
    let mut guard = DATABASE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(db) = guard.as_mut() else {
        return Ok(None);
    };
    if !db.per_dir.contains_key(data_dir) {
        let pair = (Scratch::on(&db.base)?, Scratch::on(&db.base)?);
        db.per_dir.insert(data_dir.to_path_buf(), pair);
    }
    let (store, archive) = &db.per_dir[data_dir];
    Ok(Some((store.url.clone(), archive.url.clone())))
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Create `names` as users, each with an enrolment code, before the server
/// starts (one transaction: provisioning is not what is measured).
pub fn provision(data_dir: &Path, names: &[String]) -> Result<Vec<String>> {
    std::fs::create_dir_all(data_dir)?;
    let database = databases(data_dir)?.map(|d| d.0);
    let mut store = crate::serve::open_server_store(data_dir, database.as_deref())?;
    Ok(store.add_users_with_codes(names, "staff", Clock::from_env().now_ms())?)
}

impl ServerProc {
    /// Start `keepwire serve` on a free loopback port and wait until it
    /// serves (which it does once its records member is enrolled).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the keepwire binary")?;
        let log = data_dir.join("serve.log");
        let log_file = std::fs::File::create(&log)?;
        let storage: Vec<String> = match databases(data_dir)? {
            Some((store, archive)) => vec![
                "--database".into(),
                store,
                "--records-database".into(),
                archive,
            ],
            None => Vec::new(),
        };
        let child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .args(&storage)
            .env("KEEPWIRE_LOG", "warn")
            .env("KEEPWIRE_ADMIN_LISTEN", "off")
            // Nobody acts on a bench's archive, and several run at once.
            .env("KEEPWIRE_RECORDS_LISTEN", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting keepwire serve")?;
        let mut server = ServerProc {
            child,
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            log,
        };
        let start = Instant::now();
        loop {
            if let Some(url) = server.served_url()? {
                server.url = url;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("keepwire serve exited ({status}):\n{}", server.log_text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "keepwire serve did not start within 60 s:\n{}",
                    server.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn served_url(&self) -> Result<Option<String>> {
        let f = std::fs::File::open(&self.log)?;
        for line in BufReader::new(f).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("keepwire serving on ") {
                return Ok(rest.split_whitespace().next().map(str::to_string));
            }
        }
        Ok(None)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }

    /// Resident memory now and at its peak, in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Raise this process's open-file limit (soft and, as root, hard) to at
/// least `want`; children inherit it. Returns the limit in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not allowed to raise the hard limit: take what it allows.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}
