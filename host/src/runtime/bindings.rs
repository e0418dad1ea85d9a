//! Host-side bindings of the `smithers:workflow` world (generated from `wit/`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "workflow",
    imports: { default: async },
    exports: { default: async },
    // Lets the engine notice that a render returned the same tree as the
    // previous one and reuse its frame instead of re-serializing it.
    additional_derives: [PartialEq],
});

pub use smithers::workflow::tools;
pub use smithers::workflow::types;
