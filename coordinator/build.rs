fn main() {
    // sqlx::migrate! embeds ../migrations at compile time.
    println!("cargo:rerun-if-changed=../migrations");
}
