//! A tenant trying to leave its container or its database role, on the real engine. Each
//! attempt is made the way a hostile user would, from inside what the platform gave them, and
//! must be refused by the kernel or the server, not by anything the platform checks itself:
//!
//! - in a generic container (root inside it, as most images run): raw sockets and ICMP
//!   ("ping"), `mount`, `chown` of a file it does not own, and a setuid binary run by an
//!   unprivileged user;
//! - in PostgreSQL, as the application role the tenant is given: `COPY ... FROM PROGRAM`
//!   (shell commands as the server's OS user), and the superuser over TCP even with its
//!   password.
//!
//! The generic container runs the catalog's PostgreSQL image with its own command, because
//! that image (Debian) has perl and util-linux for the probes; what it may do follows from
//! being a `docker` instance, not from the image.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use common::{instance, runtime};
use futures_util::StreamExt as _;
use iaas_core::{ClusterSource, DockerSpec, InstanceSpec, PostgresSpec};
use iaas_core::{ContainerRuntime, Secrets};
use iaas_testkit::wait::eventually;
use sqlx::{Connection, PgConnection};

/// Runs `script` with `sh -c` in `container` as `user`: its exit code and all it printed.
async fn sh(docker: &Docker, container: &str, user: &str, script: &str) -> (i64, String) {
    let created = docker
        .create_exec(
            container,
            ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some(user.to_owned()),
                cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut printed = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await.unwrap()
    {
        while let Some(chunk) = output.next().await {
            match chunk.unwrap() {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => {
                    printed.push_str(&String::from_utf8_lossy(&message));
                }
                LogOutput::StdIn { .. } => {}
            }
        }
    }
    let code = docker.inspect_exec(&created.id).await.unwrap().exit_code.unwrap();
    (code, printed)
}

/// The one container of `instance`.
async fn container_of(runtime: &iaas_docker::DockerRuntime, id: iaas_core::InstanceId) -> String {
    let containers = runtime.list_managed().await.unwrap();
    containers.into_iter().find(|c| c.instance == id && c.role == "primary").unwrap().id
}

#[tokio::test]
async fn a_generic_container_cannot_gain_privileges() {
    let runtime = runtime().await;
    let image = std::env::var("IAAS_TEST_POSTGRES_IMAGE").unwrap_or_else(|_| "postgres:16".into());
    let probe = instance(InstanceSpec::Docker(DockerSpec {
        image,
        env: BTreeMap::new(),
        ports: vec![],
        command: Some(vec!["sleep".into(), "300".into()]),
    }));
    runtime.provision(&probe, &Secrets::new()).await.unwrap();
    let container = container_of(&runtime, probe.id).await;
    let docker = &runtime.engine().client().unwrap();

    let attempts = [
        // (what, script run as root inside the container, what the refusal prints)
        (
            "a raw socket (what ping uses)",
            r#"perl -MSocket -e 'socket(my $s, PF_INET, SOCK_RAW, 1) or die "refused: $!\n"; print "opened\n"'"#,
            "refused: Operation not permitted",
        ),
        (
            "an ICMP datagram socket (unprivileged ping)",
            r#"perl -MSocket -e 'socket(my $s, PF_INET, SOCK_DGRAM, 1) or die "refused: $!\n"; print "opened\n"'"#,
            "refused: Permission denied",
        ),
        ("mounting a file system", "mount -t tmpfs none /mnt && echo mounted", "permission denied"),
        (
            "giving a root-owned file to another user",
            "chown 65534 /etc/passwd && echo chowned",
            "Operation not permitted",
        ),
        (
            "taking another user's identity",
            "perl -e '$< = $> = 65534; die \"refused: $!\\n\" if $> != 65534; print \"switched\\n\"'",
            "refused: Operation not permitted",
        ),
    ];
    let mut failures = Vec::new();
    for (what, script, refusal) in attempts {
        let (code, printed) = sh(docker, &container, "root", script).await;
        eprintln!("{what}: exit {code}: {}", printed.trim());
        if code == 0 || !printed.contains(refusal) {
            failures.push(format!("{what}: exit {code}, printed {printed:?}"));
        }
    }

    // A setuid-root copy of perl, made by root in the container, run by an unprivileged user:
    // with no-new-privileges the kernel ignores the setuid bit, so the effective user stays.
    let (code, printed) =
        sh(docker, &container, "root", "cp \"$(command -v perl)\" /tmp/suid-perl && chmod 4755 /tmp/suid-perl && ls -l /tmp/suid-perl").await;
    assert_eq!(code, 0, "preparing the setuid binary: {printed}");
    assert!(printed.starts_with("-rwsr-xr-x"), "the setuid bit is set: {printed}");
    let (code, printed) =
        sh(docker, &container, "65534", "/tmp/suid-perl -e 'print \"euid=$>\\n\"'").await;
    eprintln!("a setuid binary run by uid 65534: exit {code}: {}", printed.trim());
    if code != 0 || !printed.contains("euid=65534") {
        failures.push(format!("setuid binary: exit {code}, printed {printed:?}"));
    }
    // And the kernel says so for every process of the container.
    let (_, status) =
        sh(docker, &container, "root", "grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status")
            .await;
    for line in ["NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"] {
        if !status.contains(line) {
            failures.push(format!("/proc/self/status lacks {line:?}: {status}"));
        }
    }

    runtime.remove(probe.id, true).await.unwrap();
    assert!(failures.is_empty(), "escapes that were not refused: {failures:#?}");
}

#[tokio::test]
async fn the_application_role_is_not_a_superuser() {
    let runtime = runtime().await;
    let db = instance(InstanceSpec::Postgres(PostgresSpec::new("shop", 0)));
    runtime.provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", "tenant pw")).await.unwrap();
    let info = runtime.cluster_info(db.id).await.unwrap();
    let port = info.endpoints.iter().find(|e| e.name == "5432/tcp").unwrap().port;
    let url = format!("postgres://app:tenant%20pw@127.0.0.1:{port}/shop");
    let mut conn =
        eventually(Duration::from_secs(60), || PgConnection::connect(&url)).await.unwrap();

    // The tenant owns its database: it may create and fill tables.
    sqlx::query("CREATE TABLE loot (line text)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO loot VALUES ('mine')").execute(&mut conn).await.unwrap();
    let (superuser, owner): (bool, String) = sqlx::query_as(
        "SELECT rolsuper, pg_get_userbyid(d.datdba)::text FROM pg_roles r, pg_database d \
         WHERE r.rolname = current_user AND d.datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((superuser, owner.as_str()), (false, "app"));

    // Shell commands through the server are refused.
    let refused = sqlx::query("COPY loot FROM PROGRAM 'id'").execute(&mut conn).await.unwrap_err();
    let message = refused.to_string();
    eprintln!("COPY ... FROM PROGRAM as app: {message}");
    assert!(
        message.contains("pg_execute_server_program") || message.contains("superuser"),
        "{message}"
    );
    // So is reading the server's files.
    let refused =
        sqlx::query("SELECT pg_read_file('/etc/passwd')").execute(&mut conn).await.unwrap_err();
    assert!(refused.to_string().contains("permission denied"), "{refused}");
    conn.close().await.unwrap();

    // The superuser cannot log in over TCP even with its password (which only the platform
    // knows): pg_hba.conf rejects it before the password is asked.
    let container = container_of(&runtime, db.id).await;
    let (code, printed) = sh(
        &runtime.engine().client().unwrap(),
        &container,
        "postgres",
        "PGPASSWORD=\"$POSTGRES_PASSWORD\" psql -X -h 127.0.0.1 -U postgres -d shop -c 'SELECT 1'",
    )
    .await;
    eprintln!("superuser over TCP: exit {code}: {}", printed.trim());
    assert_ne!(code, 0, "{printed}");
    assert!(printed.contains("pg_hba.conf rejects connection"), "{printed}");
    // The platform's own way in (the socket, inside the container) still works.
    let (code, printed) = sh(
        &runtime.engine().client().unwrap(),
        &container,
        "postgres",
        "psql -X -A -t -U postgres -d shop -c 'SELECT count(*) FROM loot'",
    )
    .await;
    assert_eq!((code, printed.trim()), (0, "1"), "{printed}");

    runtime.remove(db.id, true).await.unwrap();
}

/// An instance of `owner` named `name`.
fn owned(owner: iaas_core::UserId, name: &str, spec: InstanceSpec) -> iaas_core::Instance {
    iaas_core::Instance::new(
        owner,
        iaas_core::InstanceName::new(name).unwrap(),
        spec,
        iaas_core::Resources { millicpus: 250, memory_mib: 128 },
        chrono::Utc::now(),
    )
    .unwrap()
}

/// A busybox of `owner` named `name` that sleeps.
fn sleeper(owner: iaas_core::UserId, name: &str) -> iaas_core::Instance {
    owned(
        owner,
        name,
        InstanceSpec::Docker(DockerSpec {
            image: iaas_testkit::busybox_image(),
            env: BTreeMap::new(),
            ports: vec![],
            command: Some(vec!["sleep".into(), "300".into()]),
        }),
    )
}

/// The address of `container` on `network`.
async fn address_on(docker: &Docker, container: &str, network: &str) -> String {
    let inspected = docker.inspect_container(container, None).await.unwrap();
    let networks = inspected.network_settings.unwrap().networks.unwrap();
    networks[network].ip_address.clone().unwrap()
}

/// Ada's app reaches Ada's database by its instance name; Bob's database is neither found by
/// name nor reachable by its address from Ada's app, while it answers on that address to a
/// process on Bob's own network (so the refusal is the isolation, not a dead address).
#[tokio::test]
async fn a_users_app_reaches_their_database_by_name_and_no_one_elses() {
    let runtime = runtime().await;
    let docker = &runtime.engine().client().unwrap();
    let (ada, bob) = (iaas_core::UserId::new_random(), iaas_core::UserId::new_random());
    let postgres = |database: &str| InstanceSpec::Postgres(PostgresSpec::new(database, 0));
    let ada_db = owned(ada, "orders", postgres("orders"));
    let bob_db = owned(bob, "ledger", postgres("ledger"));
    let ada_app = sleeper(ada, "app");
    let secrets = Secrets::new().with("POSTGRES_PASSWORD", "pw");
    for instance in [&ada_db, &bob_db, &ada_app] {
        runtime.provision(instance, &secrets).await.unwrap();
    }
    let app = container_of(&runtime, ada_app.id).await;
    let bob_container = container_of(&runtime, bob_db.id).await;
    let bob_address = address_on(docker, &bob_container, &runtime.user_network(bob)).await;

    let reached = eventually(Duration::from_secs(60), || async {
        match sh(docker, &app, "root", "nc -w 2 orders 5432 </dev/null").await {
            (0, _) => Ok(()),
            (code, printed) => Err(format!("exit {code}: {printed}")),
        }
    })
    .await;
    // Bob's server is up and answers on its address, seen from inside Bob's network.
    let from_bob = eventually(Duration::from_secs(60), || async {
        let probe = format!("exec 3<>/dev/tcp/{bob_address}/5432");
        match sh(docker, &bob_container, "postgres", &format!("bash -c '{probe}'")).await {
            (0, _) => Ok(()),
            (code, printed) => Err(format!("exit {code}: {printed}")),
        }
    })
    .await;
    let by_name = sh(docker, &app, "root", "nc -w 3 ledger 5432 </dev/null").await;
    let by_address =
        sh(docker, &app, "root", &format!("nc -w 3 {bob_address} 5432 </dev/null")).await;
    eprintln!("ada's app -> ledger: {by_name:?}; -> {bob_address}:5432: {by_address:?}");

    for instance in [&ada_db, &bob_db, &ada_app] {
        runtime.remove(instance.id, true).await.unwrap();
    }
    reached.expect("ada's app reaches ada's database by name");
    from_bob.expect("bob's database answers on its address inside bob's network");
    assert_ne!(by_name.0, 0, "ada's app resolved and reached bob's database by name");
    assert_ne!(by_address.0, 0, "ada's app reached bob's database by address");
    let networks =
        docker.list_networks(None::<bollard::query_parameters::ListNetworksOptions>).await.unwrap();
    for owner in [ada, bob] {
        let name = runtime.user_network(owner);
        assert!(networks.iter().all(|n| n.name.as_deref() != Some(&name)), "{name} is removed");
    }
}

/// A service the host runs on all interfaces is out of reach of a tenant's container once the
/// host firewall rule is in (what the platform adds at start): the container's connection to
/// its network's gateway times out, while a container on the engine's default bridge (not a
/// tenant network) reaches the same listener, so the refusal is the rule.
#[tokio::test]
async fn a_container_cannot_reach_the_hosts_own_services() {
    if let Err(error) = iaas_docker::firewall::isolate_host().await {
        let reason = iaas_core::error_chain(&error);
        iaas_testkit::skip_fault_test(
            "the host firewall test",
            &format!("the rule cannot be added here (run as root): {reason}"),
        );
        return;
    }
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers by closing at once, so a client that got through ends cleanly. The thread ends
    // with the test process.
    std::thread::spawn(move || listener.incoming().for_each(drop));
    let runtime = runtime().await;
    let docker = &runtime.engine().client().unwrap();
    let app = sleeper(iaas_core::UserId::new_random(), "app");
    runtime.provision(&app, &Secrets::new()).await.unwrap();
    let container = container_of(&runtime, app.id).await;
    let inspected = docker.inspect_container(&container, None).await.unwrap();
    let networks = inspected.network_settings.unwrap().networks.unwrap();
    let gateway = networks[&runtime.user_network(app.owner)].gateway.clone().unwrap();
    let tenant =
        sh(docker, &container, "root", &format!("nc -w 3 {gateway} {port} </dev/null")).await;

    // The control: the engine's default bridge is no tenant network.
    let control = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(iaas_testkit::busybox_image()),
                cmd: Some(vec!["sleep".into(), "60".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&control.id, None).await.unwrap();
    let inspected = docker.inspect_container(&control.id, None).await.unwrap();
    let bridge = inspected.network_settings.unwrap().networks.unwrap();
    let bridge_gateway = bridge["bridge"].gateway.clone().unwrap();
    let default_bridge =
        sh(docker, &control.id, "root", &format!("nc -w 3 {bridge_gateway} {port} </dev/null"))
            .await;
    eprintln!(
        "tenant -> {gateway}:{port}: {tenant:?}; default bridge -> {bridge_gateway}:{port}: {default_bridge:?}"
    );
    let removal =
        bollard::query_parameters::RemoveContainerOptionsBuilder::new().force(true).build();
    docker.remove_container(&control.id, Some(removal)).await.unwrap();
    runtime.remove(app.id, true).await.unwrap();

    assert_eq!(
        default_bridge.0, 0,
        "the listener answers from the default bridge: {default_bridge:?}"
    );
    assert_ne!(tenant.0, 0, "a tenant's container reached the host's listener: {tenant:?}");
}

/// The user's network outlives the removal of one instance while another one of theirs is
/// stopped (the engine would let it go: a stopped container is no active endpoint), so the
/// stopped one starts again; it goes with the last one.
#[tokio::test]
async fn a_stopped_instance_keeps_its_network_when_another_is_removed() {
    let runtime = runtime().await;
    let owner = iaas_core::UserId::new_random();
    let (kept, removed) = (sleeper(owner, "kept"), sleeper(owner, "removed"));
    runtime.provision(&kept, &Secrets::new()).await.unwrap();
    runtime.provision(&removed, &Secrets::new()).await.unwrap();
    runtime.stop(kept.id).await.unwrap();
    runtime.remove(removed.id, true).await.unwrap();
    let started = runtime.start(kept.id).await;
    runtime.remove(kept.id, true).await.unwrap();
    started.expect("the stopped instance starts again");
    let networks = runtime
        .engine()
        .client()
        .unwrap()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    let name = runtime.user_network(owner);
    assert!(networks.iter().all(|n| n.name.as_deref() != Some(&name)), "{name} is removed");
}
