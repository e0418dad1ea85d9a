//! Host-side bindings of the `smithers:workflow` world, generated from the SDK's copy of
//! the WIT (`guest-sdk/wit/`, packaged with the SDK: the one source of truth guests and host
//! share; the top-level `wit/` points there).

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "workflow",
    // `emit` and `log` may trap: a guest that outgrows its output limits
    // is stopped at the call (the WIT functions return nothing to refuse with).
    imports: {
        "smithers:workflow/tools.emit": async | trappable,
        "smithers:workflow/tools.log": async | trappable,
        default: async,
    },
    exports: { default: async },
    // Lets the engine notice that a render returned the same tree as the
    // previous one and reuse its frame instead of re-serializing it.
    additional_derives: [PartialEq],
});

pub use smithers::workflow::tools;
pub use smithers::workflow::types;
