fn main() {
    // sqlx::migrate! embeds ../migrations/{sqlite,postgres} at compile time.
    println!("cargo:rerun-if-changed=../migrations");
}
