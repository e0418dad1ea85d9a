//! Host-side bindings of the `smithers:workflow` world (generated from `wit/`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "workflow",
    imports: { default: async },
    exports: { default: async },
});

pub use smithers::workflow::tools;
pub use smithers::workflow::types;
