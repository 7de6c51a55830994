//! The deploy path end to end. `deploy/terraform/examples/fleet` (a controller with its
//! load balancer, RDS database and role, two sources and a collector) is planned, applied
//! and destroyed offline against the lab's moto with the machine's terraform and its
//! provider mirror. What the instances were given is read back from moto: each agent's
//! user-data is the rendered bootstrap with the fleet's settings and no secret, the
//! controller's reads its database password from Secrets Manager, the role allows three
//! actions. Then one source's user-data runs as cloud-init would at first boot, in a lab
//! host's namespace whose IMDS stand-in answers for that instance (`terraform/first-boot.sh`:
//! a copy-on-write root of this machine, systemctl stood in for): it installs the agent's
//! real .deb (`scripts/package --profile dev`) served from inside the lab, the agent joins
//! by instance identity through a stand-in for the load balancer, a session from it mirrors
//! to a lab collector, and `teefleet-bootstrap uninstall` revokes it and leaves the host's
//! mangle table clean. Skips loudly where terraform, its provider mirror or cargo-deb is
//! missing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{InstanceAttributeName, InstanceStateName, Tag};
use serde_json::Value;
use teefleet_lab::{
    COLLECTOR, Identity, JOIN_TAG, LAB_ACCOUNT, Lab, ec2, iid, launched_now, moto, require_root_or_skip,
};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// The name the operator points at the controllers' load balancer (`controller_dns_name`);
/// in the first-boot root's /etc/hosts it names the lab's stand-in for the balancer.
const CONTROLLER_NAME: &str = "controller.fleet.lab";
/// The lab host whose namespace boots one of the example's sources.
const BOOT_HOST: &str = "source2";
const WAIT: Duration = Duration::from_secs(60);

/// terraform, and the provider mirror, or why the test cannot run.
fn terraform() -> Result<(PathBuf, PathBuf), String> {
    let bin = std::env::var_os("TEEFLEET_TERRAFORM").map(PathBuf::from).unwrap_or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("terraform"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/terraform"))
    });
    let plugins =
        std::env::var_os("TEEFLEET_TF_PLUGINS").map_or_else(|| PathBuf::from("/opt/tf-plugins"), PathBuf::from);
    if !bin.is_file() {
        return Err(format!("no terraform binary (looked for {})", bin.display()));
    }
    if !plugins.join("registry.terraform.io/hashicorp/aws").is_dir() {
        return Err(format!("no hashicorp/aws provider mirror under {}", plugins.display()));
    }
    Ok((bin, plugins))
}

/// Copies `from` into `to`, leaving out Terraform's working files.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text == ".terraform" || name_text.starts_with("terraform.tfstate") || name_text == ".terraform.lock.hcl"
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy");
        }
    }
}

struct Tf {
    bin: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Tf {
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.bin);
        command.args(args).current_dir(&self.dir).env_clear().kill_on_drop(true);
        command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command.env("HOME", self.dir.parent().expect("parent"));
        for (k, v) in &self.env {
            command.env(k, v);
        }
        tokio::time::timeout(Duration::from_secs(900), command.output())
            .await
            .unwrap_or_else(|_| panic!("terraform {args:?} took more than 15 minutes"))
            .expect("running terraform")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "terraform {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args).await).expect("terraform's JSON")
    }
}

/// Every resource in `terraform show -json`'s values, by address.
fn resources(show: &Value) -> BTreeMap<String, Value> {
    fn walk(module: &Value, into: &mut BTreeMap<String, Value>) {
        for r in module["resources"].as_array().into_iter().flatten() {
            into.insert(r["address"].as_str().expect("address").to_owned(), r["values"].clone());
        }
        for child in module["child_modules"].as_array().into_iter().flatten() {
            walk(child, into);
        }
    }
    let mut all = BTreeMap::new();
    walk(&show["values"]["root_module"], &mut all);
    all
}

/// What cloud-init would get: base64-decoded and, when it is gzip, unpacked (in `dir`).
async fn unpack(base64: &str, dir: &Path) -> String {
    let mut child = Command::new("sh")
        .args(["-c", "base64 -d > user-data.raw && gunzip -c -f user-data.raw; rm -f user-data.raw"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    child.stdin.take().expect("stdin").write_all(base64.as_bytes()).await.expect("write");
    let out = child.wait_with_output().await.expect("unpack");
    assert!(out.status.success(), "user-data does not decode");
    String::from_utf8(out.stdout).expect("user-data is text")
}

/// `bash -n`, and shellcheck where it is installed.
async fn lint(script: &str, name: &str, dir: &Path) {
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write script");
    let syntax = Command::new("bash").arg("-n").arg(&path).output().await.expect("bash -n");
    assert!(syntax.status.success(), "{name} is not valid bash: {}", String::from_utf8_lossy(&syntax.stderr));
    match Command::new("shellcheck").arg(&path).output().await {
        Ok(out) => assert!(out.status.success(), "shellcheck {name}:\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(_) => eprintln!("shellcheck is not installed: {name} only checked with bash -n"),
    }
}

async fn user_data(client: &aws_sdk_ec2::Client, id: &str, dir: &Path) -> String {
    let attr = client
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .expect("DescribeInstanceAttribute userData");
    let value = attr.user_data().and_then(|u| u.value()).unwrap_or_else(|| panic!("{id} has no user-data"));
    unpack(value, dir).await
}

/// The `export KEY='VALUE'` lines of a rendered agent user-data.
fn exports(script: &str) -> BTreeMap<String, String> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => vec![],
    }
}

/// The packages of the workspace's debug binaries, and the agent .deb's sha256 from their
/// SHA256SUMS.
fn package() -> (PathBuf, String) {
    let dir = teefleet_lab::procs::package_dev().unwrap_or_else(|e| panic!("{e}"));
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let sha = sums
        .lines()
        .find_map(|l| l.strip_suffix("  fleet-agent_0.1.0_amd64.deb"))
        .expect("the agent's .deb in SHA256SUMS")
        .to_owned();
    (dir, sha)
}

/// Serves `dir` over HTTP on `ip` (in this namespace, which the lab's hosts reach through
/// their gateway): the release directory an operator would host.
async fn serve(dir: &Path, ip: Ipv4Addr) -> (Child, String) {
    let port = std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).expect("a free port").port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", &ip.to_string(), "--directory"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 -m http.server");
    let started = Instant::now();
    while tokio::net::TcpStream::connect((ip, port)).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the release server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://{ip}:{port}/"))
}

/// The load balancer's stand-in: TCP passthrough from `listen` (7300, as the module's
/// listener) to the controller, which terminates TLS itself, as behind the NLB.
async fn balancer(listen: SocketAddr, controller: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("binding the balancer's stand-in");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let controller = controller.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&controller).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// Waits for `path` to hold a number (an exit status a script wrote).
async fn exit_status(path: &Path, timeout: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(rc) = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()) {
            return Some(rc);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// What to show when the first boot went wrong: its output and the agent's log.
fn boot_report(work: &Path) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| format!("({}: {e})", p.display()));
    format!(
        "first-boot.sh said:\n{}\nthe agent logged:\n{}",
        read(work.join("first-boot.log")),
        read(work.join("root/upper/var/log/fleet-agent.service.log"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_fleet_applies_against_moto_and_a_source_boots_from_its_user_data_joins_and_mirrors() {
    let (bin, plugins) = match terraform() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED terraform against moto: {why}");
            return;
        }
    };
    if !require_root_or_skip() {
        return;
    }
    if std::process::Command::new("cargo").args(["deb", "--version"]).output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED terraform against moto: cargo-deb is missing (scripts/setup installs it)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let (packages, agent_sha) = package();
    eprintln!("scripts/package --profile dev took {:.1}s", started.elapsed().as_secs_f64());

    // The lab's controller stands for the module's: it trusts the lab's identity signer,
    // and its certificate names the operator's DNS name for the balancer.
    let lab = Lab::builder()
        .secure(true)
        .join_by_identity(true)
        .agents(false)
        .controller_arg("--tls-san")
        .controller_arg(CONTROLLER_NAME)
        .start()
        .await
        .unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    lab.start_agent(COLLECTOR).expect("the collector's agent");
    let gateway = lab.network.gateway();
    let (_release_server, release_url) = serve(&packages, gateway).await;
    let controller_addr = lab.controller_url().split_once("://").map(|(_, a)| a.to_owned()).expect("controller url");
    let _balancer = balancer(SocketAddr::from((gateway, 7300)), controller_addr).await;
    let ca_pin = lab.ca_pin().expect("a secure lab has a CA pin").to_owned();

    // A copy, so the source tree gets no state or .terraform.
    let deploy = tmp.path().join("deploy");
    std::fs::create_dir_all(&deploy).expect("mkdir");
    std::fs::copy(repo.join("deploy/bootstrap.sh"), deploy.join("bootstrap.sh")).expect("copy bootstrap.sh");
    copy_tree(&repo.join("deploy/terraform"), &deploy.join("terraform"));
    let cli_config = tmp.path().join("terraformrc");
    std::fs::write(
        &cli_config,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/*/*\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/*/*\"]\n  }}\n}}\n",
            plugins.display()
        ),
    )
    .expect("CLI config");

    let client = ec2::client(&lab.moto.endpoint());
    let images = client.describe_images().send().await.expect("DescribeImages");
    let ami = images.images().first().and_then(|i| i.image_id()).expect("moto has images").to_owned();
    let controller_sha = format!("{:064x}", 0xc0e7u64);
    let vars = serde_json::json!({
        "aws_endpoint": lab.moto.endpoint(),
        "ami_id": ami,
        "release_url": release_url,
        "agent_deb_sha256": agent_sha,
        "controller_deb_sha256": controller_sha,
        "ca_pin": ca_pin,
        "controller_dns_name": CONTROLLER_NAME,
        "create_database": true,
        "operator_cidrs": ["192.0.2.0/24"],
    });
    let example = deploy.join("terraform/examples/fleet");
    std::fs::write(example.join("terraform.tfvars.json"), vars.to_string()).expect("tfvars");
    let mut env: Vec<(String, String)> = lab.moto.env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.extend([
        ("TF_CLI_CONFIG_FILE".to_owned(), cli_config.display().to_string()),
        ("CHECKPOINT_DISABLE".to_owned(), "1".to_owned()),
        ("TF_IN_AUTOMATION".to_owned(), "1".to_owned()),
        ("TF_INPUT".to_owned(), "0".to_owned()),
    ]);
    let tf = Tf { bin, dir: example, env };

    let started = Instant::now();
    tf.ok(&["init", "-input=false", "-no-color"]).await;
    tf.ok(&["validate", "-no-color"]).await;
    let init = started.elapsed();

    // A URL with a quote in it never reaches a plan.
    let refused = tf.run(&["plan", "-no-color", "-var", "release_url=http://x/'y"]).await;
    assert!(!refused.status.success(), "a release_url with a quote was accepted");
    let refused_text = String::from_utf8_lossy(&refused.stderr);
    assert!(refused_text.contains("release_url must be an http(s):// URL"), "{refused_text}");

    let started = Instant::now();
    tf.ok(&["plan", "-no-color", "-out=fleet.tfplan"]).await;
    let plan = started.elapsed();
    let started = Instant::now();
    let applied = tf.ok(&["apply", "-no-color", "-auto-approve", "fleet.tfplan"]).await;
    let apply = started.elapsed();
    // Where the time went: the provider's waiters dominate (moto answers at once).
    for line in applied.lines().filter(|l| l.contains("Creation complete after") && !l.contains("after 0s")) {
        eprintln!("  {line}");
    }

    let outputs = tf.json(&["output", "-json"]).await;
    let controller_url = outputs["controller_urls"]["value"][0].as_str().expect("controller url").to_owned();
    let sources = strings(&outputs["source_instance_ids"]["value"]);
    let collector = outputs["collector_instance_id"]["value"].as_str().expect("collector id").to_owned();
    let controllers = strings(&outputs["controller_instance_ids"]["value"]);
    assert_eq!((sources.len(), controllers.len()), (2, 1));
    assert_eq!(controller_url, format!("https://{CONTROLLER_NAME}:7300"));
    let show = tf.json(&["show", "-json", "-no-color"]).await;
    let state = resources(&show);
    let lb_dns = state["module.controller.aws_lb.controller"]["dns_name"].as_str().expect("lb dns").to_owned();

    // Each agent got the bootstrap, verbatim, with the fleet's settings and no secret.
    let bootstrap = std::fs::read_to_string(repo.join("deploy/bootstrap.sh")).expect("bootstrap.sh");
    let first = user_data(&client, &sources[0], tmp.path()).await;
    for other in [&sources[1], &collector] {
        assert_eq!(user_data(&client, other, tmp.path()).await, first, "{other} got other user-data");
    }
    assert!(first.starts_with("#!/bin/bash\n"), "{first}");
    let embedded = first
        .split_once("<<'TEEFLEET_BOOTSTRAP_EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nTEEFLEET_BOOTSTRAP_EOF\n"))
        .map(|(script, _)| script)
        .expect("the user-data embeds bootstrap.sh");
    assert_eq!(embedded, bootstrap, "the embedded bootstrap is not deploy/bootstrap.sh");
    let settings = exports(&first);
    let expected: BTreeMap<String, String> = [
        ("FLEET_CONTROLLER", controller_url.as_str()),
        ("FLEET_CA_PIN", ca_pin.as_str()),
        ("FLEET_JOIN_METHOD", "instance-identity"),
        ("FLEET_RELEASE_URL", release_url.trim_end_matches('/')),
        ("FLEET_VERSION", "0.1.0"),
        ("FLEET_DEB_SHA256", agent_sha.as_str()),
        ("FLEET_READY_TIMEOUT", "120s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(settings, expected, "the agent's settings");
    assert!(!first.contains("FLEET_JOIN_TOKEN='"), "an instance-identity user-data carries a token");
    assert!(first.trim_end().ends_with("exec /usr/local/sbin/teefleet-bootstrap"), "{first}");
    lint(&first, "agent-user-data.sh", tmp.path()).await;

    // The controller installs its package and builds its database URL from RDS's secret;
    // its certificate names both the balancer and the operator's name for it.
    let controller_data = user_data(&client, &controllers[0], tmp.path()).await;
    let secret_arn = state["module.controller.aws_db_instance.this[0]"]["master_user_secret"][0]["secret_arn"]
        .as_str()
        .expect("RDS master secret")
        .to_owned();
    for needle in [
        format!("--secret-id '{secret_arn}'"),
        format!("FLEET_TLS_SAN={lb_dns},{CONTROLLER_NAME}"),
        "FLEET_JOIN_ACCOUNTS=123456789012".to_owned(),
        "FLEET_JOIN_TAGS=teefleet=agent".to_owned(),
        format!("deb_sha256='{controller_sha}'"),
        "FLEET_LISTEN=0.0.0.0:7300".to_owned(),
    ] {
        assert!(controller_data.contains(&needle), "controller user-data lacks {needle}:\n{controller_data}");
    }
    assert!(!controller_data.contains("password\":"), "a password in the controller's user-data");
    lint(&controller_data, "controller-user-data.sh", tmp.path()).await;

    // The role as moto holds it: two EC2 actions, and the RDS secret.
    let policy: Value = serde_json::from_str(
        state["module.controller.aws_iam_role_policy.controller"]["policy"].as_str().expect("policy"),
    )
    .expect("policy JSON");
    let statements = policy["Statement"].as_array().expect("statements");
    let by_sid =
        |sid: &str| statements.iter().find(|s| s["Sid"] == sid).unwrap_or_else(|| panic!("no {sid} statement"));
    assert_eq!(strings(&by_sid("DescribeInstances")["Resource"]), ["*"]);
    let modify = by_sid("SourceDestCheck");
    assert_eq!(strings(&modify["Action"]), ["ec2:ModifyInstanceAttribute"]);
    assert_eq!(strings(&modify["Resource"]), ["arn:aws:ec2:us-east-1:123456789012:instance/*"]);
    assert_eq!(modify["Condition"]["StringEquals"]["aws:ResourceTag/teefleet"], "agent");
    assert_eq!(by_sid("NoOtherAttribute")["Effect"], "Deny");
    assert_eq!(strings(&by_sid("DatabasePasswordFromSecretsManager")["Resource"]), [secret_arn]);
    let mut allowed: Vec<String> =
        statements.iter().filter(|s| s["Effect"] == "Allow").flat_map(|s| strings(&s["Action"])).collect();
    allowed.sort();
    assert_eq!(allowed, ["ec2:DescribeInstances", "ec2:ModifyInstanceAttribute", "secretsmanager:GetSecretValue"]);

    // Security groups: collectors carry both, sources the agent group only.
    let agent_sg = state["module.controller.aws_security_group.agent"]["id"].as_str().expect("agent sg").to_owned();
    let collector_sg =
        state["module.controller.aws_security_group.collector"]["id"].as_str().expect("collector sg").to_owned();
    let described = client
        .describe_instances()
        .set_instance_ids(Some([sources.clone(), vec![collector.clone()], controllers.clone()].concat()))
        .send()
        .await
        .expect("DescribeInstances");
    let instances: Vec<_> = described.reservations().iter().flat_map(|r| r.instances()).collect();
    assert_eq!(instances.len(), 4);
    for instance in &instances {
        let id = instance.instance_id().unwrap_or_default();
        assert_eq!(instance.state().and_then(|s| s.name()), Some(&InstanceStateName::Running), "{id}");
        let groups: Vec<&str> = instance.security_groups().iter().filter_map(|g| g.group_id()).collect();
        if id == collector {
            assert!(groups.contains(&agent_sg.as_str()) && groups.contains(&collector_sg.as_str()), "{groups:?}");
        } else if sources.iter().any(|s| s == id) {
            assert_eq!(groups, [agent_sg.as_str()]);
        }
    }

    let started = Instant::now();
    first_boot(&lab, &sources[0], &first, tmp.path()).await;
    let boot = started.elapsed();

    let started = Instant::now();
    tf.ok(&["destroy", "-no-color", "-auto-approve"]).await;
    let destroy = started.elapsed();
    let after = client
        .describe_instances()
        .set_instance_ids(Some([sources, vec![collector], controllers].concat()))
        .send()
        .await
        .expect("DescribeInstances after destroy");
    for instance in after.reservations().iter().flat_map(|r| r.instances()) {
        assert_eq!(instance.state().and_then(|s| s.name()), Some(&InstanceStateName::Terminated));
    }
    eprintln!(
        "terraform against moto: init+validate {:.1}s, plan {:.1}s, apply {:.1}s, first boot to uninstall {:.1}s, destroy {:.1}s",
        init.as_secs_f64(),
        plan.as_secs_f64(),
        apply.as_secs_f64(),
        boot.as_secs_f64(),
        destroy.as_secs_f64()
    );
}

/// Boots the example's source `instance` from `user_data` in [`BOOT_HOST`]'s namespace: the
/// agent it installs joins by instance identity, a session from it mirrors to the lab's
/// collector, and `teefleet-bootstrap uninstall` revokes it and removes its rules.
async fn first_boot(lab: &Lab, instance: &str, user_data: &str, tmp: &Path) {
    // IMDS in that namespace now answers for the instance; the lab's controller asks for
    // the lab's join tag (the module's would ask for teefleet=agent, which it also carries).
    let ip = lab.ip(BOOT_HOST).expect("boot host ip").to_string();
    let document = iid::document(LAB_ACCOUNT, instance, moto::REGION, &ip, &launched_now());
    let signature = lab.sign_identity(&document).await.expect("signing the identity document");
    lab.imds(BOOT_HOST).expect("an IMDS stand-in").serve(Identity {
        instance_id: instance.to_owned(),
        document,
        signature,
    });
    lab.ec2
        .client()
        .create_tags()
        .resources(instance)
        .tags(Tag::builder().key(JOIN_TAG.0).value(JOIN_TAG.1).build())
        .send()
        .await
        .expect("tagging the instance");
    let mangle_before = lab.network.mangle_rules(BOOT_HOST).await.expect("mangle table");

    let work = tmp.join("first-boot");
    std::fs::create_dir_all(&work).expect("mkdir");
    let script = work.join("user-data.txt");
    std::fs::write(&script, user_data).expect("user-data");
    let log = std::fs::File::create(work.join("first-boot.log")).expect("log");
    let netns = lab.network.host(BOOT_HOST).expect("boot host").netns.clone();
    let hosts_line = format!("{} {CONTROLLER_NAME}", lab.network.gateway());
    let mut boot = Command::new("ip")
        .args(["netns", "exec", &netns, "unshare", "--mount", "--propagation", "private"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/terraform/first-boot.sh"))
        .arg(&work)
        .arg(&script)
        .arg(&hosts_line)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("first-boot.sh");
    // The bootstrap waits up to its 120 s for the agent's /readyz.
    let rc = exit_status(&work.join("user-data.rc"), Duration::from_secs(240)).await;
    assert_eq!(rc, Some(0), "the user-data failed\n{}", boot_report(&work));
    let said = std::fs::read_to_string(work.join("first-boot.log")).unwrap_or_default();
    assert!(said.contains("installing fleet-agent_0.1.0_amd64.deb"), "{}", boot_report(&work));

    let what = format!("{instance} to enroll and connect");
    let wait_connected =
        lab.wait_until(&what, WAIT, || async { Ok(lab.host_id_connected(instance).await?.filter(|c| *c).map(|_| ())) });
    if let Err(e) = wait_connected.await {
        panic!("{e}\n{}", boot_report(&work));
    }
    let audit = lab.fleetctl_ok(&["audit", "list", "-o", "json"]).await.expect("audit list").json().expect("json");
    let by_identity = audit.as_array().is_some_and(|a| {
        a.iter().any(|r| {
            r["action"] == "host.enroll"
                && r["target"] == instance
                && r["result"] == "ok"
                && r["actor"] == format!("instance identity (account {LAB_ACCOUNT})").as_str()
        })
    });
    assert!(by_identity, "{instance} did not enroll by instance identity: {audit}");

    let collector = lab.instance_id(COLLECTOR).expect("collector id").to_owned();
    lab.fleetctl_ok(&["collector", "add", &collector]).await.expect("collector add");
    let create = ["session", "create", "deployed", "--source", instance, "--collector", &collector];
    let out = lab.fleetctl(&[&create[..], &["--protocol", "icmp", "--wait", "--timeout", "60"]].concat()).await;
    let out = out.expect("fleetctl");
    assert!(out.success(), "session create: {out}\n{}", boot_report(&work));
    if let Err(e) = lab.ping_is_mirrored(BOOT_HOST, "deployed-source", WAIT).await {
        panic!("{e}\n{}", boot_report(&work));
    }

    // Retired as an operator would: uninstall revokes the host and removes its rules.
    let pid = boot.id().expect("first-boot.sh runs");
    let term = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.expect("kill");
    assert!(term.success(), "could not signal first-boot.sh");
    let exited = tokio::time::timeout(WAIT, boot.wait()).await;
    assert!(exited.is_ok(), "first-boot.sh did not finish uninstalling\n{}", boot_report(&work));
    let rc = exit_status(&work.join("uninstall.rc"), Duration::from_secs(1)).await;
    let said = std::fs::read_to_string(work.join("first-boot.log")).unwrap_or_default();
    assert_eq!(rc, Some(0), "uninstall failed\n{said}");
    assert!(said.contains("host revoked by the controller"), "{said}");
    let what = format!("{instance} to be disconnected");
    let gone = lab
        .wait_until(&what, WAIT, || async { Ok(lab.host_id_connected(instance).await?.filter(|c| !*c).map(|_| ())) });
    gone.await.expect("a host that was uninstalled stays connected");
    let mangle_after = lab.network.mangle_rules(BOOT_HOST).await.expect("mangle table");
    assert!(!mangle_after.contains("TEEFLEET"), "uninstall left rules:\n{mangle_after}");
    assert_eq!(
        mangle_after.lines().filter(|l| !l.starts_with('#')).count(),
        mangle_before.lines().filter(|l| !l.starts_with('#')).count(),
        "uninstall changed the mangle table:\nbefore\n{mangle_before}\nafter\n{mangle_after}"
    );
}
