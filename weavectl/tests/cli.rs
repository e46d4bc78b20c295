//! The weavectl binary against a real coordinator started in-process (port 0,
//! temp data dir): success paths, and every refusal with its one-line error
//! and exit code.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use weave_coordinator::config::ServeArgs;
use weave_proto::{
    client::{Api, connect},
    token::{AdminCredential, JoinToken},
    v1::{AllocateRequest, JoinRequest},
};

/// A coordinator serving on its own runtime's threads while the test thread
/// runs the binary. Dropping it drops the runtime, which stops the server.
struct Cluster {
    dir: TempDir,
    admin: AdminCredential,
    first_token: JoinToken,
    rt: Runtime,
}

impl Cluster {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings =
            ServeArgs::for_data_dir(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap()).settings().unwrap();
        let running = rt.block_on(weave_coordinator::start(settings, std::future::pending())).unwrap();
        let first_token = running.first_token.clone().expect("a first start makes a token").0;
        Self { dir, admin: running.admin.clone(), first_token, rt }
    }

    /// weavectl with this cluster's data dir, and nothing from the test's environment.
    fn weavectl(&self) -> Command {
        let mut cmd = bare();
        cmd.arg("--data-dir").arg(self.dir.path());
        cmd
    }

    /// Joins a fake node (no agent) and gives container `c1` an address named `web`.
    fn join_node_with_container(&self, name: &str) {
        self.rt.block_on(async {
            let channel = connect(&self.admin.coordinator, self.admin.pin).await.unwrap();
            let mut admin = Api::new(channel.clone(), &self.admin.secret).unwrap();
            let joined = admin
                .join
                .join(JoinRequest {
                    token: self.first_token.to_string(),
                    name: name.into(),
                    public_key: vec![7; 32],
                    endpoints: vec!["192.0.2.1:6784".into()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let mut node = Api::new(channel, &joined.credential).unwrap();
            node.ipam
                .allocate(AllocateRequest { container: "c1".into(), dns_name: "web".into(), ..Default::default() })
                .await
                .unwrap();
        });
    }

    /// Runs weavectl with `args` and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.weavectl().args(args).output().unwrap();
        assert!(out.status.success(), "weavectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("--json prints JSON")
    }

    /// Runs weavectl with `args`, expects exit `code` and exactly one stderr line equal to `line`.
    fn fails(&self, args: &[&str], code: i32, line: &str) {
        self.weavectl().args(args).assert().code(code).stdout("").stderr(format!("{line}\n"));
    }
}

fn bare() -> Command {
    let mut cmd = Command::cargo_bin("weavectl").unwrap();
    for var in ["WEAVE_ADMIN", "WEAVE_ADMIN_FILE", "WEAVE_DATA_DIR", "WEAVE_COORDINATOR", "WEAVE_JSON"] {
        cmd.env_remove(var);
    }
    // Never the machine's own agent (its node credential would answer `status`).
    cmd.env("WEAVE_AGENT_DATA_DIR", "/nonexistent/weave-agent");
    cmd
}

fn one_line(s: &str) -> bool {
    s.ends_with('\n') && s.matches('\n').count() == 1
}

#[test]
fn subnet_add_list_remove() {
    let c = Cluster::start();
    let added = c.ok(&["subnet", "add", "10.2.3.0/24"]);
    let vni = c.json(&["subnet", "ls"])[1]["vni"].as_u64().unwrap();
    assert_eq!(added, format!("added subnet 10.2.3.0/24, vni {vni}\n"));
    c.ok(&["subnet", "add", "10.9.0.0/16", "--name", "blue"]);

    let table = c.ok(&["subnet", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("CIDR") && lines[0].contains("NAME") && lines[0].contains("ALLOCATED"));
    assert!(lines[1].starts_with("10.32.0.0/16  default  yes"), "{table}");
    assert!(lines[1].ends_with("0/65534"), "{table}");
    assert!(lines[3].starts_with("10.9.0.0/16   blue"), "{table}");

    let list = c.json(&["subnet", "ls"]);
    let cidrs: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["cidr"].as_str().unwrap()).collect();
    assert_eq!(cidrs, ["10.32.0.0/16", "10.2.3.0/24", "10.9.0.0/16"]);
    assert_eq!(list[0]["default"], true);
    assert_eq!((&list[0]["is_default"], &list[1]["is_default"]), (&true.into(), &false.into()), "the API's name");
    assert_eq!((&list[1]["by_member"], &list[1]["added_by_node"]), (&false.into(), &0.into()), "the admin's");
    assert_eq!(list[1]["capacity"], "254");

    assert_eq!(c.ok(&["subnet", "rm", "blue"]), "removed subnet 10.9.0.0/16\n");
    let removed = c.json(&["subnet", "rm", "10.2.3.0/24"]);
    assert_eq!(removed["subnet"]["cidr"], "10.2.3.0/24");
    assert_eq!(c.json(&["subnet", "ls"]).as_array().unwrap().len(), 1);
}

#[test]
fn subnet_refusals() {
    let c = Cluster::start();
    c.fails(
        &["subnet", "add", "banana"],
        2,
        "weavectl: adding subnet banana: 'banana' is not a subnet in CIDR notation (like 10.2.3.0/24 or fd00:1::/64)",
    );
    c.fails(
        &["subnet", "add", "10.2.3.1/24"],
        2,
        "weavectl: adding subnet 10.2.3.1/24: '10.2.3.1/24' has host bits set; did you mean 10.2.3.0/24?",
    );
    // Special-use ranges mean something else on every host.
    c.fails(
        &["subnet", "add", "169.254.0.0/16"],
        2,
        "weavectl: adding subnet 169.254.0.0/16: '169.254.0.0/16' overlaps 169.254.0.0/16 (link-local, with the \
         cloud metadata service at 169.254.169.254): pick a private range such as 10.0.0.0/8",
    );
    for special in ["224.0.0.0/24", "fe80::/64", "::ffff:10.9.9.0/120", "127.0.0.0/24", "0.0.0.0/8"] {
        c.weavectl().args(["subnet", "add", special]).assert().code(2);
    }
    assert_eq!(c.json(&["subnet", "ls"]).as_array().unwrap().len(), 1, "nothing added");
    c.ok(&["subnet", "add", "10.2.0.0/16", "--name", "wide"]);
    c.fails(
        &["subnet", "add", "10.2.3.0/24"],
        5,
        "weavectl: adding subnet 10.2.3.0/24: 10.2.3.0/24 overlaps subnet 10.2.0.0/16 (wide)",
    );
    c.fails(
        &["subnet", "add", "10.2.0.0/16"],
        5,
        "weavectl: adding subnet 10.2.0.0/16: subnet 10.2.0.0/16 already exists (wide)",
    );
    c.fails(
        &["subnet", "add", "10.47.0.0/16"],
        2,
        "weavectl: adding subnet 10.47.0.0/16: 10.47.0.0/16 overlaps the block reserved for node addresses \
         (10.47.0.0/16, --node-range); choose a subnet outside it",
    );
    c.fails(
        &["subnet", "rm", "default"],
        5,
        "weavectl: removing subnet default: 10.32.0.0/16 is the default subnet and cannot be removed",
    );
    c.fails(
        &["subnet", "rm", "10.32.0.0/16"],
        5,
        "weavectl: removing subnet 10.32.0.0/16: 10.32.0.0/16 is the default subnet and cannot be removed",
    );
    c.fails(
        &["subnet", "rm", "nosuch"],
        4,
        "weavectl: removing subnet nosuch: subnet 'nosuch' is not defined (add it with `weavectl subnet add`, see \
         `weavectl subnet ls`)",
    );
    c.fails(
        &["subnet", "rm", "10.8.0.1/16"],
        2,
        "weavectl: removing subnet 10.8.0.1/16: '10.8.0.1/16' has host bits set; did you mean 10.8.0.0/16?",
    );
    // clap's own usage errors keep clap's exit code.
    c.weavectl().args(["subnet", "add"]).assert().code(2);
    for empty in ["", " "] {
        c.fails(
            &["subnet", "add", "10.9.4.0/24", "--name", empty],
            2,
            "weavectl: adding subnet 10.9.4.0/24: --name is empty (leave it out for none)",
        );
    }
    // ipnet read 010 as ten, inet_aton (ping, ip) as eight: neither is taken.
    c.fails(
        &["subnet", "add", "010.002.003.000/24"],
        2,
        "weavectl: adding subnet 010.002.003.000/24: '010.002.003.000/24' has a number with a leading zero, which \
         some tools read as octal (010 is 8 to inet_aton): write it without",
    );
    assert_eq!(c.json(&["subnet", "ls"]).as_array().unwrap().len(), 2, "nothing more added");
}

#[test]
fn an_oversized_argument_is_refused_without_quoting_it() {
    let huge = "a".repeat(9000);
    for args in [vec!["token", "revoke", &huge], vec!["subnet", "rm", &huge], vec!["dns", "rm", &huge]] {
        bare()
            .args(&args)
            .assert()
            .code(2)
            .stdout("")
            .stderr("weavectl: an argument of 9000 bytes is longer than any weavectl takes (at most 4096)\n");
    }
}

#[test]
fn host_actions_refuse_malformed_addresses_before_asking_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-agent.sock");
    let run = |args: &[&str]| bare().arg("--socket").arg(&missing).args(args).assert();
    for (args, line) in [
        (
            &["attach", "net:no/pe", "/run/netns/x"][..],
            "weavectl: attaching /run/netns/x: 'net:no/pe': expected net:default, net:<CIDR> or net:<subnet name>",
        ),
        (
            &["attach", "/run/netns/x", "/run/netns/y"][..],
            "weavectl: attaching /run/netns/y: '/run/netns/x' is a path, not an address: name one container, last \
             ([ADDR...] <container>)",
        ),
        (
            &["detach", "10.2.3.7", "web"][..],
            "weavectl: detaching web: '10.2.3.7': an address needs its prefix length (ip:<IP>/<len>)",
        ),
        (
            &["expose", "ip:10.2.3.300/24"][..],
            "weavectl: exposing this host: 'ip:10.2.3.300/24': '10.2.3.300' is not an IPv4 address",
        ),
        (
            &["hide", "net:010.2.3.0/24"][..],
            "weavectl: hiding this host: 'net:010.2.3.0/24': '010.2.3.0/24' has a number with a leading zero, which \
             some tools read as octal (010 is 8 to inet_aton): write it without",
        ),
    ] {
        run(args).code(2).stdout("").stderr(format!("{line}\n"));
    }
    // Well-formed, they go to the agent: none here, so unreachable (3).
    run(&["detach", "ip:10.2.3.7/24", "web"]).code(3).stderr(predicates::str::contains("cannot reach the agent at"));
    run(&["expose"]).code(3);
}

#[test]
fn token_create_list_revoke() {
    let c = Cluster::start();
    // `T=$(weavectl token create)`: stdout is the token and nothing else; the hint goes to stderr.
    let out = c
        .weavectl()
        .args(["token", "create", "--ttl", "1h", "--uses", "2", "--description", "ci hosts"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let token = JoinToken::parse(stdout.trim_end()).expect("stdout is the token alone");
    assert_eq!(token.pin, c.admin.pin);
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent join --token-file"), "{:?}", out.stderr);

    let list = c.json(&["token", "ls"]);
    let created = list.as_array().unwrap().iter().find(|t| t["id"] == token.id.as_str()).unwrap();
    assert_eq!(created["description"], "ci hosts");
    assert_eq!(created["uses_left"], 2);
    assert_eq!(created["state"], "active");
    assert!(!c.ok(&["token", "ls"]).contains(&token.secret), "listing never shows secrets");

    let never = c.json(&["token", "create", "--ttl", "never", "--uses", "unlimited"]);
    assert_eq!(never["expires_at"], Value::Null);
    let table = c.ok(&["token", "ls"]);
    assert!(table.starts_with("ID"), "{table}");
    let never_row = table.lines().find(|l| l.starts_with(never["id"].as_str().unwrap())).unwrap();
    assert!(never_row.contains("never") && never_row.contains("unlimited"), "{table}");

    assert_eq!(
        c.ok(&["token", "revoke", &token.id]),
        format!("revoked token {}; no member joined with it\n", token.id)
    );
    let list = c.json(&["token", "ls"]);
    let revoked = list.as_array().unwrap().iter().find(|t| t["id"] == token.id.as_str()).unwrap();
    assert_eq!(revoked["state"], "revoked");

    // The whole token pasted instead of its id: revoked by its id, and its
    // secret is neither sent nor shown.
    let pasted = c.json(&["token", "create"]);
    let whole = pasted["secret_token"].as_str().unwrap().to_string();
    let id = pasted["id"].as_str().unwrap().to_string();
    assert_eq!(c.ok(&["token", "revoke", &whole]), format!("revoked token {id}; no member joined with it\n"));
    let out = c.weavectl().args(["token", "revoke", "wv1.not-a-token.secretsecret"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a token id") && !err.contains("secretsecret"), "{err}");
    c.fails(
        &["token", "create", "--ttl", "99999999h"],
        2,
        "weavectl: --ttl: '99999999h' is too long: at most 36500d (100 years), or 'never' where that is taken",
    );
    c.fails(
        &["token", "create", "--ttl", "87601h"],
        2,
        "weavectl: creating a join token: a lifetime of 3651 days: at most 3650 (never, for a token that does not \
         expire)",
    );
    for bad in ["two\nlines", "prod\u{202e}gnp.exe", "zero\u{200b}width"] {
        c.fails(
            &["token", "create", "--description", bad],
            2,
            "weavectl: creating a join token: a token description with control or invisible format characters \
             (newlines, escapes, direction overrides, zero-width spaces): plain text only",
        );
    }
    assert!(c.ok(&["token", "create", "--description", "Zürich rack 3 – ünïcode"]).starts_with("wv1."));
    c.fails(
        &["token", "revoke", "0123456789abcdef"],
        4,
        "weavectl: revoking a join token: no join token with id '0123456789abcdef' (see `weavectl token ls`)",
    );
    c.fails(
        &["token", "create", "--ttl", "soon"],
        2,
        "weavectl: --ttl: 'soon' is not a duration: use a number with s, m, h or d (like 30m, 24h, 7d), or 'never'",
    );
    // A negative one reaches the same check (clap said "unexpected argument '-1'").
    c.fails(
        &["token", "create", "--ttl", "-1s"],
        2,
        "weavectl: --ttl: '-1s' is not a duration: use a number with s, m, h or d (like 30m, 24h, 7d), or 'never'",
    );
    c.fails(
        &["token", "create", "--ttl", "0s"],
        2,
        "weavectl: --ttl: '0s' is no time at all: give a positive duration (like 30m, 24h, 7d), or 'never'",
    );
    c.weavectl().args(["token", "create", "--uses", "0"]).assert().code(2);
    // WEAVE_JSON as scripts set it (1, yes, true), and off (0).
    for on in ["1", "yes", "true"] {
        let out = c.weavectl().env("WEAVE_JSON", on).args(["subnet", "ls"]).assert().success();
        let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(text.trim_start().starts_with('['), "WEAVE_JSON={on}: {text}");
    }
    let out = c.weavectl().env("WEAVE_JSON", "0").args(["subnet", "ls"]).assert().success();
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).trim_start().starts_with('['));
    // A usage error clap finds is one line too, as every other.
    c.fails(
        &["token", "create", "--uses", "many"],
        2,
        "weavectl: invalid value 'many' for '--uses <USES>': 'many' is not a number of hosts (1 or more) or \
         'unlimited' (see --help)",
    );
    c.fails(&["subnet", "add"], 2, "weavectl: the following required arguments were not provided: <CIDR> (see --help)");
    // Without --uses a token lets one host join (as Tailscale's and NetBird's
    // keys): a reusable token in the wrong hands adds nodes at will.
    let once = c.json(&["token", "create"]);
    assert_eq!(once["uses_left"], 1, "{once}");
}

#[test]
fn dns_add_lookup_remove() {
    let c = Cluster::start();
    assert_eq!(c.ok(&["dns", "add", "db", "10.2.3.9"]), "added db.weave.local. -> 10.2.3.9\n");
    c.ok(&["dns", "add", "DB.weave.local", "10.2.3.10"]);
    assert_eq!(c.ok(&["dns", "lookup", "db"]), "10.2.3.9\n10.2.3.10\n");
    let looked = c.json(&["dns", "lookup", "db"]);
    assert_eq!(looked["name"], "db.weave.local.");

    let table = c.ok(&["dns", "ls"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("db.weave.local.  10.2.3.9   (external)"), "{table}");
    assert_eq!(c.json(&["dns", "ls"]).as_array().unwrap().len(), 2);

    c.fails(
        &["dns", "add", "db", "10.2.3.9"],
        5,
        "weavectl: adding db -> 10.2.3.9: db.weave.local. already resolves to 10.2.3.9",
    );
    assert_eq!(c.ok(&["dns", "rm", "db", "10.2.3.10"]), "removed 1 record(s)\n");
    assert_eq!(c.ok(&["dns", "rm", "db"]), "removed 1 record(s)\n");
    c.fails(&["dns", "lookup", "db"], 4, "weavectl: looking up db: no record for db.weave.local.");
    c.fails(&["dns", "rm", "db"], 4, "weavectl: removing db: no record db.weave.local. to remove");
    c.fails(&["dns", "add", "db", "10.2.3"], 2, "weavectl: '10.2.3': not an IP address (like 10.2.3.9 or fd00::9)");
    c.fails(&["dns", "rm", "db", "nope"], 2, "weavectl: 'nope': not an IP address (like 10.2.3.9 or fd00::9)");
    c.fails(
        &["dns", "add", "bad name", "10.2.3.9"],
        2,
        "weavectl: adding bad name -> 10.2.3.9: 'bad name' is not a valid DNS name (labels of letters, digits, '-' \
         and '_', separated by dots)",
    );
}

#[test]
fn dns_share_and_unshare() {
    let c = Cluster::start();
    assert_eq!(c.ok(&["dns", "share"]), "NAME\n");
    assert_eq!(c.ok(&["dns", "share", "Web"]), "shared web.weave.local.: every node's containers may now take it\n");
    assert_eq!(c.ok(&["dns", "share", "web.weave.local."]), "web.weave.local. was already shared\n");
    assert_eq!(c.json(&["dns", "share"]), json!(["web.weave.local."]));
    c.ok(&["dns", "add", "web", "10.2.3.9"]);
    c.ok(&["dns", "add", "db", "10.2.3.10"]);
    let table = c.ok(&["dns", "ls"]);
    assert!(table.lines().next().unwrap().ends_with("SHARED"), "{table}");
    let line = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap().to_string();
    assert!(line("web.").ends_with("yes"), "{table}");
    assert!(line("db.").ends_with('-'), "{table}");
    let listed = c.json(&["dns", "ls"]);
    let shared: Vec<_> = listed.as_array().unwrap().iter().map(|r| (r["name"].clone(), r["shared"].clone())).collect();
    assert!(shared.contains(&(json!("web.weave.local."), json!(true))), "{listed}");
    assert!(shared.contains(&(json!("db.weave.local."), json!(false))), "{listed}");
    let unshared = c.json(&["dns", "unshare", "web"]);
    assert_eq!(unshared, json!({"name": "web.weave.local.", "shared": false, "changed": true, "removed": 0}));
    assert_eq!(c.ok(&["dns", "unshare", "web"]), "web.weave.local. was not shared\n");
    assert_eq!(c.ok(&["dns", "lookup", "web"]), "10.2.3.9\n", "unsharing keeps the records");
    c.fails(
        &["dns", "share", "localhost"],
        2,
        "weavectl: sharing localhost: 'localhost' is reserved: localhost is always the host itself (RFC 6761)",
    );
}

#[test]
fn nodes_and_allocations_until_node_removal() {
    let c = Cluster::start();
    assert_eq!(c.ok(&["node", "ls"]).lines().count(), 1, "only the header before any node joins");
    c.join_node_with_container("host-1");

    let nodes = c.ok(&["node", "ls"]);
    let row = nodes.lines().nth(1).unwrap();
    assert!(nodes.starts_with("ID") && nodes.contains("KEY"), "{nodes}");
    assert!(row.contains("host-1") && row.contains("10.47.") && row.contains("192.0.2.1:6784"), "{nodes}");
    assert!(row.contains("BwcHBwcH"), "key fingerprint: first 8 base64 chars of [7; 32]: {nodes}");
    let json = c.json(&["node", "ls"]);
    assert_eq!(json[0]["name"], "host-1");
    assert_eq!(json[0]["key_fingerprint"], "BwcHBwcH");
    assert_eq!(json[0]["public_key"], "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "whole, as the API has it");
    // The token it joined with names it: revoking a leaked one says whom to check.
    let first = c.first_token.id.clone();
    let tokens = c.ok(&["token", "ls"]);
    let row = tokens.lines().find(|l| l.starts_with(&first)).unwrap();
    assert!(tokens.starts_with("ID") && tokens.contains("NODES") && row.contains("host-1"), "{tokens}");
    assert_eq!(
        c.ok(&["token", "revoke", &first]),
        format!(
            "revoked token {first}; the nodes that joined with it stay: host-1 (`weavectl node rm <name>` for any \
             you do not know)\n"
        )
    );

    let allocations = c.json(&["ipam", "ls"]);
    assert_eq!(allocations.as_array().unwrap().len(), 1);
    assert_eq!(allocations[0]["container"], "c1");
    assert_eq!(allocations[0]["node"], "host-1");
    assert_eq!(allocations[0]["subnet"], "10.32.0.0/16");
    let table = c.ok(&["ipam", "ls", "--node", "host-1", "--subnet", "default"]);
    assert!(table.lines().nth(1).unwrap().contains("10.32.0.0/16  host-1  c1"), "{table}");
    assert_eq!(c.json(&["ipam", "ls", "--container", "other"]), serde_json::json!([]));
    assert_eq!(c.ok(&["dns", "lookup", "web"]).lines().count(), 1);
    assert!(c.ok(&["subnet", "ls"]).contains("1/65534"));
    c.fails(
        &["ipam", "ls", "--subnet", "10.32.0.1/16"],
        2,
        "weavectl: --subnet: '10.32.0.1/16' has host bits set; did you mean 10.32.0.0/16?",
    );

    c.fails(&["node", "rm", ""], 2, "weavectl: removing a node: a node is named by its name or id; none was given");
    c.fails(&["node", "rm", "host-9"], 4, "weavectl: removing node host-9: no node 'host-9' (see `weavectl node ls`)");
    let address = json[0]["address"].as_str().unwrap();
    assert_eq!(
        c.ok(&["node", "rm", "host-1"]),
        format!("removed node host-1 ({address}): released 1 allocation(s) and 1 DNS record(s)\n")
    );
    assert_eq!(c.json(&["ipam", "ls"]), serde_json::json!([]));
    assert_eq!(c.json(&["node", "ls"]), serde_json::json!([]));
    c.fails(&["dns", "lookup", "web"], 4, "weavectl: looking up web: no record for web.weave.local.");
}

/// `ipam release`: the admin frees a container's addresses (and its
/// records) in the coordinator, for one gone with its host or left half
/// attached (an agent killed mid-attach left an address held for good, with
/// no command to free it; found by a review, 2026-12-04).
#[test]
fn the_admin_releases_a_containers_addresses() {
    let c = Cluster::start();
    c.join_node_with_container("host-1");
    let address = c.json(&["ipam", "ls"])[0]["address"].as_str().unwrap().to_string();
    c.fails(
        &["ipam", "release", "c9", "--node", "host-1"],
        4,
        "weavectl: releasing the addresses of c9 on host-1: container 'c9' on node host-1 has no address, and none \
         is kept for it",
    );
    c.fails(
        &["ipam", "release", "c1", "--node", "host-1", "--subnet", "10.32.0.1/16"],
        2,
        "weavectl: --subnet: '10.32.0.1/16' has host bits set; did you mean 10.32.0.0/16?",
    );
    // Empty is not "every subnet" (a script's empty $SUBNET released them all).
    c.fails(
        &["ipam", "release", "c1", "--node", "host-1", "--subnet", ""],
        2,
        "weavectl: --subnet: is empty: name a subnet (CIDR or name), or leave --subnet out",
    );
    assert_eq!(c.json(&["ipam", "ls"]).as_array().unwrap().len(), 1);
    assert_eq!(
        c.ok(&["ipam", "release", "c1", "--node", "host-1", "--subnet", "default"]),
        format!("released {address} (1 DNS record(s) removed)\n")
    );
    assert_eq!(c.json(&["ipam", "ls"]), serde_json::json!([]));
    c.fails(&["dns", "lookup", "web"], 4, "weavectl: looking up web: no record for web.weave.local.");
    // Released, its address is kept for it (--address-hold); released
    // again, the hold ends and another host's container may take it.
    assert_eq!(c.json(&["ipam", "holds"])[0]["address"], address.as_str());
    assert_eq!(
        c.ok(&["ipam", "release", "c1", "--node", "host-1"]),
        format!("ended the hold on {address}: any node may take it now\n")
    );
    assert_eq!(c.json(&["ipam", "holds"]), serde_json::json!([]));
}

#[test]
fn status_summary_views_and_json() {
    let c = Cluster::start();
    let text = c.ok(&["status"]);
    assert!(text.contains("default subnet  10.32.0.0/16"), "{text}");
    assert!(text.contains("node range      10.47.0.0/16"), "{text}");
    assert!(text.contains("dns domain      weave.local."), "{text}");
    let s = c.json(&["status"]);
    // Which coordinator answered (of several): the address the call reached.
    assert_eq!(s["answered_at"], c.admin.coordinator.as_str(), "{s}");
    assert!(text.contains(&format!("coordinator     {}", c.admin.coordinator)), "{text}");
    assert_eq!(s["range"], "10.32.0.0/12");
    assert_eq!(s["nodes"], 0);
    assert_eq!(s["subnets"], 1);
    assert_eq!(s["active_tokens"], 1);
    assert!(s["version"].is_string());
    assert!(c.ok(&["status", "subnets"]).starts_with("CIDR"));
    assert!(c.ok(&["status", "nodes"]).starts_with("ID"));
    assert!(c.ok(&["status", "ipam"]).starts_with("ADDRESS"));
    assert!(c.ok(&["status", "dns"]).starts_with("NAME"));
    // Every listing parses as JSON too.
    for view in ["nodes", "subnets", "ipam", "dns"] {
        assert!(c.json(&["status", view]).is_array());
    }
    // `status peers` asks the local agent: none here, so "unreachable" (3), one line.
    let missing = c.dir.path().join("no-agent.sock");
    c.weavectl()
        .args(["status", "peers", "--socket"])
        .arg(&missing)
        .assert()
        .code(3)
        .stderr(predicates::str::contains("cannot reach the agent at"));
}

/// On a host with an agent and no admin credential, `status` reads the
/// cluster with the node's own credential (its agent's identity.json), as
/// Weave Net's `weave status` worked on every peer; changes still need the admin.
#[test]
fn status_on_a_host_reads_with_the_nodes_credential() {
    let c = Cluster::start();
    let credential = c.rt.block_on(async {
        let channel = connect(&c.admin.coordinator, c.admin.pin).await.unwrap();
        let mut admin = Api::new(channel, &c.admin.secret).unwrap();
        let join = JoinRequest {
            token: c.first_token.to_string(),
            name: "h1".into(),
            public_key: vec![7; 32],
            endpoints: vec!["192.0.2.1:6784".into()],
            ..Default::default()
        };
        admin.join.join(join).await.unwrap().into_inner().credential
    });
    let host = tempfile::tempdir().unwrap();
    let agent = host.path().join("agent");
    std::fs::create_dir(&agent).unwrap();
    let identity =
        json!({"coordinator": c.admin.coordinator, "pin": c.admin.pin.to_string(), "credential": credential});
    std::fs::write(agent.join("identity.json"), identity.to_string()).unwrap();
    let on_host = |args: &[&str]| {
        let mut cmd = bare();
        cmd.arg("--data-dir").arg(host.path()).arg("--agent-data-dir").arg(&agent).args(args);
        cmd.output().unwrap()
    };
    let out = on_host(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nodes           1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let nodes = on_host(&["status", "nodes"]);
    assert!(String::from_utf8_lossy(&nodes.stdout).contains("h1"), "{nodes:?}");
    // Only status: a change still asks for the admin credential.
    let add = on_host(&["subnet", "add", "10.2.3.0/24"]);
    assert_eq!(add.status.code(), Some(2), "{add:?}");
}

#[test]
fn credential_from_env_file_and_coordinator_override() {
    let c = Cluster::start();
    let elsewhere = tempfile::tempdir().unwrap();

    // WEAVE_ADMIN wins over a data dir without a credential.
    bare()
        .env("WEAVE_ADMIN", c.admin.to_string())
        .env("WEAVE_DATA_DIR", elsewhere.path())
        .args(["subnet", "add", "10.2.3.0/24"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("added subnet 10.2.3.0/24"));

    let file = elsewhere.path().join("cred");
    std::fs::write(&file, format!("{}\n", c.admin)).unwrap();
    bare().arg("--admin-file").arg(&file).args(["subnet", "ls"]).assert().success();
    bare().env("WEAVE_ADMIN_FILE", &file).args(["status"]).assert().success();

    // A credential pointing at a closed port, corrected by --coordinator.
    let stale = AdminCredential { coordinator: closed_port(), ..c.admin.clone() };
    bare().arg("--admin").arg(stale.to_string()).args(["status"]).assert().code(3);
    bare()
        .arg("--admin")
        .arg(stale.to_string())
        .args(["--coordinator", &c.admin.coordinator, "--json", "status"])
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| serde_json::from_str::<Value>(s).is_ok()));
    bare()
        .env("WEAVE_ADMIN", stale.to_string())
        .env("WEAVE_COORDINATOR", &c.admin.coordinator)
        .args(["node", "ls"])
        .assert()
        .success();
}

#[test]
fn missing_or_malformed_credential() {
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().join("admin.credential");
    bare().arg("--data-dir").arg(empty.path()).args(["status"]).assert().code(2).stdout("").stderr(format!(
        "weavectl: no admin credential: {} does not exist; pass --admin <wva1…> (WEAVE_ADMIN), --admin-file <path> \
         (WEAVE_ADMIN_FILE), or --data-dir <the coordinator's data dir> (WEAVE_DATA_DIR)\n",
        path.display()
    ));
    // On a host with an agent (its socket there): what needs no credential.
    let socket = empty.path().join("agent.sock");
    std::fs::write(&socket, "").unwrap();
    let mut on_a_host = bare();
    on_a_host.arg("--data-dir").arg(empty.path()).arg("--socket").arg(&socket).arg("status");
    on_a_host.assert().code(2).stderr(predicate::str::ends_with(
        "; this host's own view needs none: `weavectl status peers`, `agent status`, and `weavectl status` reads \
         with the host's node credential (--agent-data-dir <the agent's data dir>, WEAVE_AGENT_DATA_DIR, when it \
         is not /var/lib/weave/agent)\n",
    ));
    bare()
        .args(["--admin", "hello", "status"])
        .assert()
        .code(2)
        .stderr("weavectl: --admin (WEAVE_ADMIN): not a weave admin credential: it should start with 'wva1'\n");
    bare().arg("--admin-file").arg(empty.path().join("nope")).arg("status").assert().code(2).stderr(
        predicate::str::starts_with("weavectl: --admin-file (WEAVE_ADMIN_FILE) ").and(predicate::function(one_line)),
    );
}

/// A user who may not enter the coordinator's data dir (0700, root's) is
/// told permission denied (exit 6), as with --admin-file, not that the
/// credential does not exist (exit 2; found by a review, 2026-12-05).
#[test]
fn a_data_dir_the_user_may_not_enter_is_permission_denied() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    if !nix::unistd::Uid::effective().is_root() {
        return; // needs another user to be
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.credential"), "wva1.x").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weavectl"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("status")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("permission denied (run as root") && one_line(&stderr), "{stderr}");
}

#[test]
fn wrong_pin_is_refused() {
    let first = Cluster::start();
    let second = Cluster::start();
    let impostor = AdminCredential { coordinator: first.admin.coordinator.clone(), ..second.admin.clone() };
    let out = bare().arg("--admin").arg(impostor.to_string()).arg("status").assert().code(3).stdout("");
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(one_line(&stderr), "{stderr}");
    assert!(
        stderr.starts_with(&format!("weavectl: cannot reach the coordinator at {}: ", first.admin.coordinator)),
        "{stderr}"
    );
    assert!(
        stderr.contains(": the coordinator's identity does not match the pin (expected sha256:"),
        "the verifier's sentence, without tonic's wrappers: {stderr}"
    );
}

#[test]
fn unknown_credential_is_refused_by_the_coordinator() {
    let first = Cluster::start();
    let second = Cluster::start();
    let stranger = AdminCredential { secret: second.admin.secret.clone(), ..first.admin.clone() };
    bare().arg("--admin").arg(stranger.to_string()).arg("status").assert().code(6).stdout("").stderr(
        "weavectl: getting the cluster status: credential not recognised by this coordinator: another cluster's; a \
         node's it does not know (restored from a backup taken before it joined: run `agent join --token-file \
         <file>` on that host); or an admin credential it never had (use the one in its \
         <data-dir>/admin.credential)\n",
    );
}

#[test]
fn admin_rotate_saves_the_new_credential_and_kills_the_old() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("cred");
    std::fs::write(&file, format!("{}\n", c.admin)).unwrap();
    // From a file: the new one replaces it there (0600), and is not printed.
    let said = bare().arg("--admin-file").arg(&file).args(["admin", "rotate"]).assert().success();
    let said = String::from_utf8(said.get_output().stdout.clone()).unwrap();
    assert!(said.contains("the old one no longer works") && !said.contains("wva1."), "{said}");
    let new = AdminCredential::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_ne!(new.secret, c.admin.secret);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    bare()
        .arg("--admin")
        .arg(c.admin.to_string())
        .arg("status")
        .assert()
        .code(6)
        .stderr(predicate::str::contains("this admin credential was replaced (`weavectl admin rotate`"));
    bare().arg("--admin-file").arg(&file).arg("status").assert().success();
    // The coordinator's own copy was rewritten too.
    assert_eq!(
        AdminCredential::parse(&std::fs::read_to_string(c.dir.path().join("admin.credential")).unwrap()).unwrap(),
        new
    );
    // From --admin: printed alone on the first line.
    let said = bare().arg("--admin").arg(new.to_string()).args(["admin", "rotate"]).assert().success();
    let said = String::from_utf8(said.get_output().stdout.clone()).unwrap();
    let newest = AdminCredential::parse(said.lines().next().unwrap()).unwrap();
    bare().arg("--admin").arg(newest.to_string()).arg("status").assert().success();
    bare().arg("--admin-file").arg(&file).arg("status").assert().code(6);
}

#[test]
fn unreachable_coordinator() {
    let c = Cluster::start();
    let addr = closed_port();
    let out = c.weavectl().args(["--coordinator", &addr, "status"]).assert().code(3).stdout("");
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(one_line(&stderr), "{stderr}");
    assert!(
        stderr.starts_with(&format!("weavectl: cannot reach the coordinator at {addr}: tcp connect error")),
        "{stderr}"
    );
    // Something that is not TLS on that port (a metrics port, a web server).
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = http.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    });
    let out = c.weavectl().args(["--coordinator", &http_addr, "status"]).assert().code(3).stdout("");
    server.join().unwrap();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(
        stderr,
        format!(
            "weavectl: cannot reach the coordinator at {http_addr}: it does not answer with TLS (not the \
             coordinator's gRPC port, or something else listens there)\n"
        )
    );
    c.fails(
        &["--coordinator", "no-port", "status"],
        2,
        "weavectl: coordinator address: 'no-port' is not host:port (like 192.0.2.1:6783 or [2001:db8::1]:6783)",
    );
    // IPv6 without brackets, and a zone: a usage error that says how to
    // write it (a zone was looked up as a name: exit 3, "cannot reach").
    c.fails(
        &["--coordinator", "::1:6783", "status"],
        2,
        "weavectl: coordinator address: '::1:6783': write an IPv6 address in brackets, as [::1]:6783",
    );
    c.fails(
        &["--coordinator", "[fe80::1%lo]:6783", "status"],
        2,
        "weavectl: coordinator address: '[fe80::1%lo]:6783': a zone (%…) is not supported: give a global or \
         unique-local address, as [2001:db8::1]:6783",
    );
    // A port no coordinator can have is a typo, not an outage.
    for bad in ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:-1", "[::1]"] {
        c.fails(
            &["--coordinator", bad, "status"],
            2,
            &format!(
                "weavectl: coordinator address: '{bad}' is not host:port (like 192.0.2.1:6783 or [2001:db8::1]:6783)"
            ),
        );
    }
}

#[test]
fn help_documents_exit_codes() {
    bare().arg("--help").assert().success().stdout(
        predicate::str::contains("Exit codes:").and(predicate::str::contains("3  cannot reach the coordinator")),
    );
}

/// A port nothing listens on: tcpmux's, below the ephemeral range, so no
/// parallel test's listener or self-connect can take it (a port bound and
/// released here could be).
fn closed_port() -> String {
    let addr = "127.0.0.1:1";
    assert!(std::net::TcpStream::connect(addr).is_err(), "something listens on {addr}");
    addr.to_string()
}

#[test]
fn completions_generate_for_every_shell() {
    let c = Cluster::start();
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef weavectl"), ("fish", "complete -c weavectl")] {
        let out = c.ok(&["completion", shell]);
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("subnet") && out.contains("attach"), "{shell} completes subcommands");
    }
    c.weavectl().args(["completion", "tcsh"]).assert().code(2);
}

/// Output nobody takes: a reader that went away (`| head -1`) ends weavectl
/// quietly with exit 0; a full disk is one line and exit 1; a new join token
/// or rotated admin credential that stdout refused goes to stderr (it exists
/// nowhere else; the old credential is dead) and the command fails.
/// Before, each was a panic (exit 101) and the rotated credential was lost.
#[test]
fn output_to_a_closed_pipe_or_a_full_disk() {
    use std::process::{Command as Std, Stdio};
    let c = Cluster::start();
    for i in 0..20 {
        c.ok(&["dns", "add", &format!("n{i}"), &format!("10.2.3.{}", i + 1)]);
    }
    let bin = assert_cmd::cargo::cargo_bin("weavectl");
    let std = |args: &[&str]| {
        let mut cmd = Std::new(&bin);
        cmd.arg("--data-dir").arg(c.dir.path()).args(args);
        for var in ["WEAVE_ADMIN", "WEAVE_ADMIN_FILE", "WEAVE_DATA_DIR", "WEAVE_COORDINATOR", "WEAVE_JSON"] {
            cmd.env_remove(var);
        }
        cmd
    };
    for args in [&["dns", "ls"][..], &["--json", "dns", "ls"], &["completion", "bash"]] {
        let mut child = std(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = std(&["dns", "ls"]).stdout(full()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "weavectl: cannot write the output: No space left on device (os error 28)\n"
    );
    // A new join token that stdout refuses goes to stderr: it exists nowhere else.
    for stdout in [Stdio::from(full()), Stdio::piped()] {
        let mut child = std(&["token", "create"]).stdout(stdout).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        let line =
            err.lines().find(|l| l.starts_with("weavectl: the new join token: ")).unwrap_or_else(|| panic!("{err}"));
        JoinToken::parse(line.rsplit(' ').next().unwrap()).expect("the token, whole");
    }
    // admin rotate with the credential on the command line (nowhere to save
    // the new one) prints it: on stderr when stdout fails.
    let out = Std::new(&bin)
        .args(["--admin", &c.admin.to_string(), "admin", "rotate"])
        .env_remove("WEAVE_ADMIN_FILE")
        .env_remove("WEAVE_DATA_DIR")
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("wva1.")).unwrap_or_else(|| panic!("no credential in: {err}"));
    let credential = &line[line.find("wva1.").unwrap()..];
    let new = AdminCredential::parse(credential).expect("the new credential, whole");
    assert_ne!(new.secret, c.admin.secret);
    let listed = bare().args(["--admin", credential, "dns", "ls"]).output().unwrap();
    assert!(
        listed.status.success(),
        "the credential told on stderr works: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
