//! On x86_64 ELF targets: generates OpenSSL's ChaCha20, Poly1305 and CPU
//! feature assembly from the pinned openssl-src crate's perlasm (perl, which
//! every Debian system has), prefixes every global symbol with `weave_aead_`
//! (no clash with a libcrypto linked beside it), drops the `.init` call to
//! OpenSSL's C set-up (src/asm.rs does it), and assembles the three files.
//! Elsewhere, or without perl, nothing is built and the crate uses ring; the
//! test `the_assembly_is_built_on_x86_64_linux` fails if that happened on
//! x86_64 Linux.
use std::{env, fs, path::PathBuf, process::Command};

const SOURCES: [(&str, &str); 3] = [
    ("crypto/chacha/asm/chacha-x86_64.pl", "chacha-x86_64.s"),
    ("crypto/poly1305/asm/poly1305-x86_64.pl", "poly1305-x86_64.s"),
    ("crypto/x86_64cpuid.pl", "x86_64cpuid.s"),
];
const PREFIX: &str = "weave_aead_";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(weave_aead_asm)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CC");
    println!("cargo::rerun-if-env-changed=PATH");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || !matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd") {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let src = openssl_src::source_dir();
    let cc = cc::Build::new().get_compiler();
    let mut generated = Vec::new();
    for (pl, s) in SOURCES {
        let path = out.join(s);
        // The scripts ask $CC's assembler which instructions it knows
        // (AVX-512 needs GNU as >= 2.25): give them the compiler cc uses.
        let status = Command::new("perl").arg(src.join(pl)).arg("elf").arg(&path).env("CC", cc.path()).status();
        match status {
            Ok(s) if s.success() => generated.push(path),
            other => {
                println!("cargo::warning=weave-aead: perl {pl} failed ({other:?}); falling back to ring");
                return;
            }
        }
    }
    let text: Vec<String> = generated.iter().map(|p| fs::read_to_string(p).expect("generated assembly")).collect();
    let mut symbols: Vec<String> = text
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.trim().strip_prefix(".globl").map(|s| s.trim().to_string()))
        .collect();
    symbols.extend(["OPENSSL_ia32cap_P".to_string(), "OPENSSL_cpuid_setup".to_string()]);
    symbols.sort();
    symbols.dedup();
    let mut build = cc::Build::new();
    // perlasm emits no .note.GNU-stack; OpenSSL's own build passes this.
    build.flag("-Wa,--noexecstack");
    for (path, t) in generated.iter().zip(text) {
        let mut t = drop_init_call(&t);
        for sym in &symbols {
            t = prefix_symbol(&t, sym);
        }
        fs::write(path, t).expect("write assembly");
        build.file(path);
    }
    build.compile("weave_aead_asm");
    println!("cargo::rustc-cfg=weave_aead_asm");
}

/// x86_64cpuid.pl puts `call OPENSSL_cpuid_setup` into `.init` (OpenSSL's
/// C start-up); the crate calls the detection itself before first use.
fn drop_init_call(t: &str) -> String {
    let lines: Vec<&str> = t.lines().collect();
    let mut kept = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.starts_with(".section") && l.ends_with(".init") {
            assert!(lines.get(i + 1).is_some_and(|n| n.contains("OPENSSL_cpuid_setup")), "unexpected .init section");
            i += 2;
            continue;
        }
        kept.push(lines[i]);
        i += 1;
    }
    kept.join("\n") + "\n"
}

/// Replaces the identifier `sym` (not a part of a longer one, nor a local
/// `.L` label) with its prefixed name.
fn prefix_symbol(t: &str, sym: &str) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$';
    let mut out = String::with_capacity(t.len() + 64);
    let mut rest = t;
    while let Some(at) = rest.find(sym) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + sym.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(ident) || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str(sym);
        } else {
            out.push_str(PREFIX);
            out.push_str(sym);
        }
        rest = &rest[at + sym.len()..];
    }
    out.push_str(rest);
    out
}
