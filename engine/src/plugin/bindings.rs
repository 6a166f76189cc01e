//! Host bindings for the two plugin worlds, generated from wit/ by wasmtime's bindgen. The
//! IPAM world reuses the driver world's shared interfaces (types, kv, log), so one host
//! implementation serves both.

pub mod driver {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "driver-plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod ipam {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ipam-plugin",
        imports: { default: async },
        exports: { default: async },
        with: {
            "weft:plugin/types": super::driver::weft::plugin::types,
            "weft:plugin/kv": super::driver::weft::plugin::kv,
            "weft:plugin/log": super::driver::weft::plugin::log,
        },
    });
}
