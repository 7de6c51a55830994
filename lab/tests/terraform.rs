//! `deploy/terraform/examples/fleet` (a controller with its load balancer, RDS database and
//! role, two sources and a collector) planned, applied and destroyed offline against moto
//! with the machine's terraform and its provider mirror; then what the instances were given
//! is read back from moto: each agent's user-data is the rendered bootstrap with the fleet's
//! settings and no secret, the controller's reads its database password from Secrets
//! Manager. Skips loudly where terraform or the mirror is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{InstanceAttributeName, InstanceStateName};
use serde_json::Value;
use teefleet_lab::{Moto, ec2};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const CA_PIN: &str = "sha256:5d5b09f6dcb2d53a5fffc60c4ac0d55fabdf556069d6631545f42aa6e3500f2e";
const RELEASE_URL: &str = "http://10.42.0.5:8080/teefleet/0.1.0/";

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

#[tokio::test(flavor = "multi_thread")]
async fn example_fleet_applies_against_moto_and_instances_get_the_rendered_bootstrap() {
    let (bin, plugins) = match terraform() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED terraform against moto: {why}");
            return;
        }
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().expect("temp dir");
    let moto = match Moto::start(tmp.path()).await {
        Ok(moto) => moto,
        Err(e) => panic!("moto: {e}"),
    };

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

    let client = ec2::client(&moto.endpoint());
    let images = client.describe_images().send().await.expect("DescribeImages");
    let ami = images.images().first().and_then(|i| i.image_id()).expect("moto has images").to_owned();
    let agent_sha = format!("{:064x}", 0xa9e47u64);
    let controller_sha = format!("{:064x}", 0xc0e7u64);
    let vars = serde_json::json!({
        "aws_endpoint": moto.endpoint(),
        "ami_id": ami,
        "release_url": RELEASE_URL,
        "agent_deb_sha256": agent_sha,
        "controller_deb_sha256": controller_sha,
        "ca_pin": CA_PIN,
        "create_database": true,
        "operator_cidrs": ["192.0.2.0/24"],
    });
    let example = deploy.join("terraform/examples/fleet");
    std::fs::write(example.join("terraform.tfvars.json"), vars.to_string()).expect("tfvars");
    let mut env: Vec<(String, String)> = moto.env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
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
    let show = tf.json(&["show", "-json", "-no-color"]).await;
    let state = resources(&show);
    let lb_dns = state["module.controller.aws_lb.controller"]["dns_name"].as_str().expect("lb dns").to_owned();
    assert_eq!(controller_url, format!("https://{lb_dns}:7300"));

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
        ("FLEET_CA_PIN", CA_PIN),
        ("FLEET_JOIN_METHOD", "instance-identity"),
        ("FLEET_RELEASE_URL", RELEASE_URL.trim_end_matches('/')),
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

    // The controller installs its package and builds its database URL from RDS's secret.
    let controller_data = user_data(&client, &controllers[0], tmp.path()).await;
    let secret_arn = state["module.controller.aws_db_instance.this[0]"]["master_user_secret"][0]["secret_arn"]
        .as_str()
        .expect("RDS master secret")
        .to_owned();
    for needle in [
        format!("--secret-id '{secret_arn}'"),
        format!("FLEET_TLS_SAN={lb_dns}"),
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
        "terraform against moto: init+validate {:.1}s, plan {:.1}s, apply {:.1}s, destroy {:.1}s",
        init.as_secs_f64(),
        plan.as_secs_f64(),
        apply.as_secs_f64(),
        destroy.as_secs_f64()
    );
}
