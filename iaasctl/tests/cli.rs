//! The real `iaasctl` binary against a real platform started in-process (embedded store, bus
//! and index, the local Docker engine): what a user types, what they see, and the exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PASSWORD: &str = "correct horse battery staple";

/// A platform serving on a free loopback port until dropped via [`TestPlatform::stop`].
struct TestPlatform {
    url: String,
    /// The first-run `admin` account's password.
    admin_password: String,
    data_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TestPlatform {
    async fn start() -> Self {
        let data_dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl"));
        let dir = data_dir.display().to_string();
        let config = iaas_platform::Config::from_lookup(|key| match key {
            "IAAS_DATA_DIR" => Some(dir.clone()),
            "IAAS_LISTEN" => Some("127.0.0.1:0".to_owned()),
            _ => None,
        })
        .unwrap();
        let platform = iaas_platform::Platform::start(&config).await.unwrap();
        let admin =
            iaas_platform::admin::ensure_admin(&platform.auth, platform.repos.users.as_ref())
                .await
                .unwrap()
                .expect("a new platform creates its admin");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = iaas_platform::router(&platform);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            };
            iaas_platform::serve(listener, router, &config, shutdown).await.unwrap();
            platform.shutdown().await;
        });
        Self { url, admin_password: admin.password, data_dir, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the platform stops within 30 s")
            .unwrap();
        std::fs::remove_dir_all(&self.data_dir).unwrap();
    }
}

/// One user's shell: a platform URL and a private config directory.
struct Shell {
    url: String,
    config_home: PathBuf,
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Shell {
    fn new(url: &str) -> Self {
        let config_home =
            std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-home"));
        Self { url: url.to_owned(), config_home }
    }

    fn credentials_file(&self) -> PathBuf {
        self.config_home.join("iaasctl").join("credentials")
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "").await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_iaasctl"))
            .args(args)
            .env("IAAS_URL", &self.url)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("iaasctl {args:?} finished within 120 s"))
            .unwrap();
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        eprintln!("$ iaasctl {}\n{}{}", args.join(" "), run.stdout, run.stderr);
        run
    }

    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(0), "iaasctl {args:?} failed: {run:?}");
        run.stdout
    }

    async fn log_in(&self, username: &str) {
        let password = format!("{PASSWORD}\n");
        let run = self.run_with_stdin(&["register", username, "--password-stdin"], &password).await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(run.stdout.contains(&format!("registered {username}")), "{run:?}");
        let run = self.run_with_stdin(&["login", username, "--password-stdin"], &password).await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(run.stdout.contains(&format!("logged in to {} as {username}", self.url)));
    }

    fn read_credentials(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.credentials_file()).unwrap()).unwrap()
    }

    fn write_credentials(&self, credentials: &serde_json::Value) {
        std::fs::write(self.credentials_file(), credentials.to_string()).unwrap();
    }

    fn remove(self) {
        std::fs::remove_dir_all(&self.config_home).unwrap();
    }
}

/// Deletes the named instances if the test panics before it did, so a failing run leaves no
/// containers on the shared Docker engine. `Drop` cannot await: it runs the binary blocking,
/// which is fine because the platform serves from the runtime's worker threads.
/// It logs in afresh first: the test may have failed with the stored tokens in any state.
struct DeleteOnPanic<'a> {
    shell: &'a Shell,
    username: &'a str,
    names: &'a [&'a str],
}

impl Drop for DeleteOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let iaasctl = |args: &[&str], stdin: &str| {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iaasctl"))
                .args(args)
                .env("IAAS_URL", &self.shell.url)
                .env("XDG_CONFIG_HOME", &self.shell.config_home)
                .stdin(Stdio::piped())
                .spawn()?;
            if let Some(mut input) = child.stdin.take() {
                std::io::Write::write_all(&mut input, stdin.as_bytes())?;
            }
            child.wait()
        };
        let login =
            iaasctl(&["login", self.username, "--password-stdin"], &format!("{PASSWORD}\n"));
        eprintln!("cleanup: login: {login:?}");
        for name in self.names {
            let deleted = iaasctl(&["instances", "delete", name, "--purge"], "");
            eprintln!("cleanup: iaasctl instances delete {name} --purge: {deleted:?}");
        }
    }
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_runs_a_docker_instance_through_its_life_from_the_command_line() {
    let platform = TestPlatform::start().await;
    let shell = Shell::new(&platform.url);
    shell.log_in("ada").await;
    let _cleanup = DeleteOnPanic { shell: &shell, username: "ada", names: &["worker", "broken"] };

    // The tokens are kept for the owner's eyes only, and the password is not kept at all.
    let credentials = std::fs::read_to_string(shell.credentials_file()).unwrap();
    assert_eq!(file_mode(&shell.credentials_file()), 0o600);
    assert!(!credentials.contains(PASSWORD));

    // Create: the progress lines follow the status until it runs.
    let busybox = iaas_testkit::busybox_image();
    let stdout = shell
        .ok(&[
            "instances",
            "create",
            "docker",
            "worker",
            "--image",
            &busybox,
            "--millicpus",
            "250",
            "--memory-mib",
            "64",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 300 & wait",
        ])
        .await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("created docker worker ("), "{stdout}");
    let id = lines[0].split(['(', ')']).nth(1).unwrap().to_owned();
    let provisioning = lines.iter().position(|l| l.contains(" provisioning")).expect(&stdout);
    let running = lines.iter().position(|l| l.contains(" running")).expect(&stdout);
    assert!(provisioning < running, "{stdout}");
    assert_eq!(lines.last(), Some(&"worker is running"), "{stdout}");

    // List: the table has it, running; so does the JSON.
    let table = shell.ok(&["instances", "list"]).await;
    assert!(table.starts_with("ID"), "{table}");
    let row = table.lines().find(|l| l.starts_with(&id)).expect(&table);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..4], ["worker", "docker", "running"], "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&shell.ok(&["instances", "list", "--json"]).await).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["status"], "running");

    // An expired access token is refreshed before the request, transparently...
    let mut stored = shell.read_credentials();
    let first_refresh = stored["refresh_token"].clone();
    stored["access_expires_at"] = serde_json::json!("2000-01-01T00:00:00Z");
    shell.write_credentials(&stored);
    let got = shell.ok(&["instances", "get", "worker"]).await;
    assert!(got.contains(&id) && got.contains("running"), "{got}");
    let refreshed = shell.read_credentials();
    assert_ne!(refreshed["refresh_token"], first_refresh, "the refresh rotated the pair");
    assert_eq!(file_mode(&shell.credentials_file()), 0o600);
    // ...and one the platform refuses is refreshed after the 401 and the request retried.
    let mut stored = refreshed.clone();
    stored["access_token"] = serde_json::json!("not.a.token");
    shell.write_credentials(&stored);
    shell.ok(&["instances", "info", &id]).await;
    assert_ne!(shell.read_credentials()["refresh_token"], refreshed["refresh_token"]);

    // Stop, followed by default: the platform answers `stopping` at once, the last line is
    // the outcome.
    let stdout = shell.ok(&["instances", "stop", "worker"]).await;
    assert!(stdout.starts_with(&format!("stop requested for worker ({id})")), "{stdout}");
    assert!(stdout.contains("stopping"), "{stdout}");
    assert!(stdout.lines().last().unwrap().contains("stopped"), "{stdout}");
    // A restart of a stopped instance is followed until it runs again.
    let stdout = shell.ok(&["instances", "restart", "worker"]).await;
    assert!(stdout.contains("restarting"), "{stdout}");
    assert!(stdout.lines().last().unwrap().contains("running"), "{stdout}");
    let stdout = shell.ok(&["instances", "stop", "worker", "--no-wait"]).await;
    assert_eq!(stdout.trim(), format!("stop requested for worker ({id})"));
    iaas_testkit::wait::eventually(Duration::from_secs(20), || async {
        let got = shell.ok(&["instances", "get", "worker"]).await;
        if got.contains("status:     stopped") { Ok(()) } else { Err(got) }
    })
    .await
    .unwrap();

    // The event log has its whole life so far, found by instance name (indexing is
    // asynchronous, so wait for it), and by filters.
    iaas_testkit::wait::eventually(Duration::from_secs(20), || async {
        let run = shell.run(&["events", "search", "--instance", "worker"]).await;
        let wanted = ["docker.created", "docker.started", "docker.stopping", "docker.stopped"];
        let found = run.code == Some(0) && wanted.iter().all(|w| run.stdout.contains(w));
        if found { Ok(()) } else { Err(run) }
    })
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &shell
            .ok(&[
                "events", "search", "--type", "docker", "--action", "created", "--since", "1h",
                "--json",
            ])
            .await,
    )
    .unwrap();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{json}");
    assert_eq!(entries[0]["instance_id"], id.as_str());
    // Pagination: one entry per page, the cursor leads to the next, --all reads them all.
    let first = shell.run(&["events", "search", "--instance", &id, "--limit", "1"]).await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(first.stdout.lines().count(), 2, "a header and one entry: {first:?}");
    let cursor = first.stderr.split("--cursor ").nth(1).unwrap().split_whitespace().next().unwrap();
    let second = shell
        .ok(&["events", "search", "--instance", &id, "--limit", "1", "--cursor", cursor])
        .await;
    assert_ne!(first.stdout.lines().nth(1), second.lines().nth(1), "the next page moves on");
    let all: serde_json::Value = serde_json::from_str(
        &shell
            .ok(&["events", "search", "--instance", &id, "--limit", "1", "--all", "--json"])
            .await,
    )
    .unwrap();
    assert!(all["entries"].as_array().unwrap().len() >= 3, "created, started, stopped: {all}");
    assert_eq!(all["next_cursor"], serde_json::Value::Null);
    let stats = shell.ok(&["events", "stats", "--since", "1h", "--bucket", "600"]).await;
    assert!(stats.contains("created=1") && stats.contains("docker="), "{stats}");

    // Delete, then the list no longer shows it.
    let stdout = shell.ok(&["instances", "delete", "worker", "--purge"]).await;
    assert!(
        stdout.starts_with(&format!("delete requested for worker ({id}) and its data")),
        "{stdout}"
    );
    assert!(stdout.lines().last().unwrap().contains("deleted"), "{stdout}");
    let table = shell.ok(&["instances", "list"]).await;
    assert!(!table.contains(&id), "{table}");

    // An image the engine does not have: provisioning fails, and so does the command.
    let run = shell
        .run(&["instances", "create", "docker", "broken", "--image", "iaas-local/no-such-image:1"])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("error: instance broken") && run.stderr.contains("failed"),
        "{run:?}"
    );
    shell.ok(&["instances", "delete", "broken"]).await;

    // Logging out forgets the tokens; the next command says how to log in again.
    assert!(shell.ok(&["logout"]).await.contains("logged out"));
    assert!(!shell.credentials_file().exists());
    let run = shell.run(&["instances", "list"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not logged in"), "{run:?}");

    drop(_cleanup);
    shell.remove();
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_exits_1_with_the_platforms_message_and_sessions_end_one_by_one() {
    let platform = TestPlatform::start().await;
    let shell = Shell::new(&platform.url);
    shell.log_in("bob").await;
    let run = shell.run_with_stdin(&["login", "bob", "--password-stdin"], "wrong password\n").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "error: invalid username or password (invalid_credentials, HTTP 401)",
        "{run:?}"
    );
    // An instance that is not there is the platform's 404, printed the same way.
    let run = shell.run(&["instances", "get", "nothing-here"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("no instance named \"nothing-here\""), "{run:?}");
    let run = shell.run(&["instances", "stop", "0190a0a0-0000-7000-8000-000000000000"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not_found, HTTP 404"), "{run:?}");

    // A second login (another device); bob ends the first one by its ID.
    let laptop = Shell::new(&platform.url);
    let password = format!("{PASSWORD}\n");
    let run = laptop.run_with_stdin(&["login", "bob", "--password-stdin"], &password).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let listed: serde_json::Value =
        serde_json::from_str(&shell.ok(&["sessions", "list", "--json"]).await).unwrap();
    let ids: Vec<String> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["family"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    let table = shell.ok(&["sessions", "list"]).await;
    assert!(table.starts_with("ID") && table.contains(&ids[0]), "{table}");
    let ended = laptop.ok(&["sessions", "revoke", &ids[0]]).await;
    assert_eq!(ended.trim(), format!("session {} ended", ids[0]));
    let run = laptop.run(&["sessions", "revoke", &ids[0]]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("session_not_found, HTTP 404"), "{run:?}");
    let listed: serde_json::Value =
        serde_json::from_str(&laptop.ok(&["sessions", "list", "--json"]).await).unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
    laptop.remove();
    shell.remove();
    platform.stop().await;
}

#[tokio::test]
async fn a_closed_port_exits_3() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let shell = Shell::new(&url);
    let run = shell.run_with_stdin(&["login", "ada", "--password-stdin"], "secret\n").await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!("error: cannot reach the platform at {url}")),
        "{run:?}"
    );
}

#[tokio::test]
async fn bad_arguments_exit_2_before_any_request() {
    // A closed port: any request would exit 3, so exit 2 proves nothing was sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let shell = Shell::new(&url);
    let run = shell.run(&["events", "search", "--since", "yesterday"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("invalid --since \"yesterday\""), "{run:?}");
    let run = shell.run(&["instances", "create", "docker", "web"]).await;
    assert_eq!(run.code, Some(2), "the image is required: {run:?}");
    let run = shell.run(&["--url", "localhost:8080", "instances", "list"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    // No terminal to prompt on (the test's stdin is a pipe) and no --password-stdin.
    let run = shell.run(&["login", "ada"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--password-stdin"), "{run:?}");
    let run = shell.run_with_stdin(&["login", "ada", "--password-stdin"], "\n").await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("the password is empty"), "{run:?}");
    // High availability's flags are checked before anything is sent.
    let run = shell.run(&["instances", "create", "postgres", "db", "--synchronous"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "error: --synchronous needs --ha: synchronous replication is offered on highly available clusters"
    );
    let run = shell.run(&["instances", "create", "postgres", "db", "--ha"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--ha needs --replicas 1 or more"), "{run:?}");
    // So are a restore's: a copy is highly available, and --at needs a source.
    let restore = ["instances", "create", "postgres", "copy", "--restore-from", "db"];
    let run = shell.run(&[&restore[..], &["--replicas", "0"]].concat()).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--restore-from needs --replicas 1 or more"), "{run:?}");
    let run = shell.run(&[&restore[..], &["--at", "yesterday"]].concat()).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("invalid --at \"yesterday\""), "{run:?}");
    let run = shell.run(&["instances", "create", "postgres", "db", "--at", "5m"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let run = shell.run(&["instances", "--help"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let commands = [
        "list",
        "get",
        "create",
        "start",
        "stop",
        "restart",
        "delete",
        "info",
        "stats",
        "replication",
        "switchover",
        "backup",
        "backups",
    ];
    for command in commands {
        assert!(run.stdout.contains(command), "{command} in {}", run.stdout);
    }
}

/// A highly available PostgreSQL cluster from the command line, on the platform's local
/// image: created with `--ha --synchronous`, shown as such, switched over (the old and new
/// primary printed), and a switchover of a plain instance refused with the platform's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_switches_over_a_highly_available_cluster_from_the_command_line() {
    let platform = TestPlatform::start().await;
    let shell = Shell::new(&platform.url);
    shell.log_in("ada").await;
    let _cleanup = DeleteOnPanic { shell: &shell, username: "ada", names: &["orders", "plain"] };

    let stdout = shell
        .ok(&[
            "instances",
            "create",
            "postgres",
            "orders",
            "--replicas",
            "2",
            "--ha",
            "--memory-mib",
            "256",
        ])
        .await;
    assert_eq!(stdout.lines().last(), Some("orders is running"), "{stdout}");
    let got = shell.ok(&["instances", "get", "orders"]).await;
    assert!(got.contains("ha:         yes, asynchronous replication"), "{got}");
    assert!(got.contains(r#""ha":true"#) && !got.contains("synchronous\""), "{got}");

    // `running` comes when the members run; their first election may still be under way, and
    // until it is over the platform refuses a switchover (409 refused).
    let stdout = iaas_testkit::wait::eventually(Duration::from_secs(120), || async {
        let run = shell.run(&["instances", "switchover", "orders", "--timeout", "100"]).await;
        match run.code {
            Some(0) => Ok(run.stdout),
            Some(1) if run.stderr.contains("(refused, HTTP 409)") => Err(run),
            _ => panic!("the switchover failed: {run:?}"),
        }
    })
    .await
    .unwrap();
    let field = |name: &str| {
        let line = stdout.lines().find(|l| l.starts_with(name)).expect(&stdout);
        line[name.len()..].trim().to_owned()
    };
    assert!(stdout.starts_with("switchover done for orders ("), "{stdout}");
    let (old, new) = (field("old primary:"), field("new primary:"));
    assert!(old.starts_with("member-") && new.starts_with("member-"), "{stdout}");
    assert_ne!(old, new, "{stdout}");
    assert!(field("took:").ends_with(" s"), "{stdout}");

    // Back to the old primary by name, once it follows the new one; the answer as JSON.
    let answer = iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        let run = shell
            .run(&[
                "instances",
                "switchover",
                "orders",
                "--target",
                &old,
                "--json",
                "--timeout",
                "100",
            ])
            .await;
        match run.code {
            Some(0) => Ok(serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()),
            Some(1) if run.stderr.contains("(refused, HTTP 409)") => Err(run),
            _ => panic!("the switchover failed: {run:?}"),
        }
    })
    .await
    .unwrap();
    assert_eq!(answer["action"], "switchover", "{answer}");
    assert_eq!(
        (answer["old_primary"].as_str(), answer["new_primary"].as_str()),
        (Some(&*new), Some(&*old))
    );
    assert!(answer["took_ms"].as_u64().is_some(), "{answer}");
    iaas_testkit::wait::eventually(Duration::from_secs(20), || async {
        let run = shell
            .run(&["events", "search", "--instance", "orders", "--action", "switchover"])
            .await;
        if run.code == Some(0) && run.stdout.matches("postgres.switchover").count() == 2 {
            Ok(())
        } else {
            Err(run)
        }
    })
    .await
    .unwrap();

    // A single-node instance has no replica to hand over to: the platform says so.
    shell.ok(&["instances", "create", "postgres", "plain", "--no-wait"]).await;
    let run = shell.run(&["instances", "switchover", "plain", "--target", "member-1"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("(not_highly_available, HTTP 422)"), "{run:?}");

    shell.ok(&["instances", "delete", "orders", "--purge"]).await;
    shell.ok(&["instances", "delete", "plain", "--purge"]).await;
    drop(_cleanup);
    shell.remove();
    platform.stop().await;
}

/// Backups and a point-in-time restore from the command line, on the platform's local image:
/// a highly available cluster backed up once its first election is over, its backups listed,
/// a restore to a moment before that backup refused before anything is made, and a copy
/// restored to a moment after it, shaped like its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_backs_up_and_restores_a_highly_available_cluster_from_the_command_line() {
    let platform = TestPlatform::start().await;
    let shell = Shell::new(&platform.url);
    shell.log_in("ada").await;
    // The copies first: a copy's members read the source's repository.
    let names = ["ledger-copy", "too-early", "ledger"];
    let _cleanup = DeleteOnPanic { shell: &shell, username: "ada", names: &names };
    let before_any_backup = chrono::Utc::now().to_rfc3339();

    // Two clusters of four containers each fit the default quota at a quarter core apiece.
    let small = ["--millicpus", "250", "--memory-mib", "256"];
    let create = ["instances", "create", "postgres", "ledger", "--database", "ledger"];
    let stdout = shell.ok(&[&create[..], &["--replicas", "1", "--ha"], &small].concat()).await;
    assert_eq!(stdout.lines().last(), Some("ledger is running"), "{stdout}");
    let id = stdout.lines().next().unwrap().split(['(', ')']).nth(1).unwrap().to_owned();

    // A backup is refused (409 refused) until the first election is over.
    let stdout = iaas_testkit::wait::eventually(Duration::from_secs(120), || async {
        let run = shell.run(&["instances", "backup", "ledger", "--timeout", "300"]).await;
        match run.code {
            Some(0) => Ok(run.stdout),
            Some(1) if run.stderr.contains("(refused, HTTP 409)") => Err(run),
            _ => panic!("the backup failed: {run:?}"),
        }
    })
    .await
    .unwrap();
    let first = stdout.lines().next().unwrap();
    assert!(first.ends_with(&format!(" of ledger ({id}) taken")), "{stdout}");
    let label = first.split_whitespace().nth(1).unwrap().to_owned();
    assert!(label.ends_with('F'), "a full backup's label: {stdout}");
    assert!(stdout.contains("\ntype:      full\n"), "{stdout}");
    assert!(stdout.contains(" in the repository)"), "{stdout}");

    let run = shell.run(&["instances", "backups", "ledger"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("LABEL"), "{run:?}");
    let row = run.stdout.lines().find(|l| l.starts_with(&label)).expect(&run.stdout);
    assert_eq!(row.split_whitespace().nth(1), Some("full"), "{row}");
    assert!(run.stderr.contains("WAL archived: "), "{run:?}");
    assert!(run.stderr.contains("restorable to any time after "), "{run:?}");
    let listed: serde_json::Value =
        serde_json::from_str(&shell.ok(&["instances", "backups", &id, "--json"]).await).unwrap();
    assert_eq!(listed["backups"][0]["label"], label.as_str(), "{listed}");
    let stopped: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(listed["backups"][0]["stopped_at"].clone()).unwrap();

    // A moment no backup reaches: refused with the earliest one there is, and nothing made.
    let early = ["instances", "create", "postgres", "too-early", "--restore-from", "ledger"];
    let run = shell.run(&[&early[..], &["--at", &before_any_backup]].concat()).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("error: cannot restore from ledger: --at ")
            && run.stderr.contains("the earliest time it can be restored to is "),
        "{run:?}"
    );
    assert!(!shell.ok(&["instances", "list"]).await.contains("too-early"));

    // A moment after the backup: the copy runs, with its source's database and replicas.
    // pgBackRest's times are whole seconds, so the moment must be in a later second; the
    // commands above took longer than that.
    let at = chrono::Utc::now();
    assert!(at.timestamp() > stopped.timestamp(), "{at} is in the second the backup ended");
    let at = at.to_rfc3339();
    let restore = ["instances", "create", "postgres", "ledger-copy", "--restore-from", "ledger"];
    let stdout = shell.ok(&[&restore[..], &["--at", &at], &small].concat()).await;
    assert!(stdout.starts_with("created postgres ledger-copy ("), "{stdout}");
    assert!(
        stdout
            .contains(&format!("restoring ledger ({id}) from backup {label}, WAL replayed up to ")),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("ledger-copy is running"), "{stdout}");
    // `running` comes with the endpoint; the copy is whole once its replica streams from the
    // restored primary.
    let replication = iaas_testkit::wait::eventually(Duration::from_secs(120), || async {
        let run = shell.run(&["instances", "replication", "ledger-copy"]).await;
        let view: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        if view["replicas"][0]["state"] == "streaming" { Ok(view) } else { Err(run) }
    })
    .await
    .unwrap();
    assert!(replication["primary"].as_str().unwrap().contains("-member-"), "{replication}");
    let copy: serde_json::Value =
        serde_json::from_str(&shell.ok(&["instances", "get", "ledger-copy", "--json"]).await)
            .unwrap();
    let spec = &copy["spec"];
    assert_eq!(spec["restore"]["from"], id.as_str(), "{copy}");
    assert_eq!(
        (spec["database"].as_str(), spec["replicas"].as_u64(), spec["ha"].as_bool()),
        (Some("ledger"), Some(1), Some(true)),
        "{copy}"
    );

    shell.ok(&["instances", "delete", "ledger-copy", "--purge"]).await;
    shell.ok(&["instances", "delete", "ledger", "--purge"]).await;
    drop(_cleanup);
    shell.remove();
    platform.stop().await;
}

/// Quotas from the command line: a user sees theirs and cannot change it; the first-run admin
/// lowers it to one instance, the second create is refused with the platform's reason, and a
/// reset brings the defaults back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_a_users_quota_from_the_command_line() {
    let platform = TestPlatform::start().await;
    let ada = Shell::new(&platform.url);
    ada.log_in("ada").await;
    let _cleanup = DeleteOnPanic { shell: &ada, username: "ada", names: &["one"] };
    let admin = Shell::new(&platform.url);
    let password = format!("{}\n", platform.admin_password);
    let run = admin.run_with_stdin(&["login", "admin", "--password-stdin"], &password).await;
    assert_eq!(run.code, Some(0), "{run:?}");

    let table = ada.ok(&["quota", "show"]).await;
    let instances = table.lines().find(|l| l.starts_with("instances")).expect(&table);
    assert_eq!(
        instances.split_whitespace().collect::<Vec<_>>(),
        ["instances", "10", "0", "default"]
    );

    let refused = ada.run(&["quota", "set", "ada", "--instances", "100"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("admin"), "names the missing scope: {refused:?}");

    // The parked outbox events are the administrators' too: none here.
    let parked = admin.ok(&["outbox", "parked"]).await;
    assert_eq!(parked.lines().count(), 1, "a header and no entry: {parked}");
    assert!(parked.starts_with("SEQ"), "{parked}");
    let refused = ada.run(&["outbox", "parked"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("insufficient_scope"), "{refused:?}");
    let missing = admin.run(&["outbox", "retry", "12345"]).await;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stderr.contains("not_found, HTTP 404"), "{missing:?}");

    let table = admin.ok(&["quota", "set", "ada", "--instances", "1"]).await;
    let instances = table.lines().find(|l| l.starts_with("instances")).expect(&table);
    assert_eq!(instances.split_whitespace().collect::<Vec<_>>(), ["instances", "1", "0", "admin"]);

    let busybox = iaas_testkit::busybox_image();
    let create = |name: &'static str| {
        let busybox = busybox.clone();
        let ada = &ada;
        async move {
            ada.run(&[
                "instances",
                "create",
                "docker",
                name,
                "--image",
                &busybox,
                "--millicpus",
                "100",
                "--memory-mib",
                "32",
                "--no-wait",
                "--",
                "sleep",
                "300",
            ])
            .await
        }
    };
    let first = create("one").await;
    assert_eq!(first.code, Some(0), "{first:?}");
    let second = create("two").await;
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(second.stderr.contains("quota exceeded: instances allows 1, 1 in use"), "{second:?}");

    admin.ok(&["quota", "reset", "ada"]).await;
    let shown: serde_json::Value =
        serde_json::from_str(&admin.ok(&["quota", "show", "--user", "ada", "--json"]).await)
            .unwrap();
    assert_eq!(
        (shown["override"].clone(), shown["limits"]["instances"].clone()),
        (serde_json::json!({}), serde_json::json!(10))
    );
    assert_eq!(shown["usage"]["instances"], 1);

    ada.ok(&["instances", "delete", "one", "--purge"]).await;
    platform.stop().await;
}
