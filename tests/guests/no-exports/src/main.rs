//! `fixture-no-exports`: a valid wasip2 component (a plain command exporting `wasi:cli/run`)
//! that does not export the `smithers:workflow` world. The host must refuse to load it as a
//! workflow with a clear error.

fn main() {
    println!("I am not a workflow");
}
