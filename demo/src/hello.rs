fn main() {
    println!("Hello from a gfs2 disk built by the runner.");
}
