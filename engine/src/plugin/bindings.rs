//! Host bindings for the plugin worlds, generated from wit/ by wasmtime's bindgen: the
//! current contract (`weft:plugin@0.2.0`), and the frozen 0.1 one (wit/v0.1) that older plugins
//! were built against. Each IPAM world reuses its driver world's shared interfaces (types,
//! kv, log, config), so one host implementation serves both worlds of a version.

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
            "weft:plugin/config": super::driver::weft::plugin::config,
        },
    });
}

/// The 0.1 contract, for plugins built before 0.2.
pub mod v01 {
    pub mod driver {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "driver-plugin",
            imports: { default: async },
            exports: { default: async },
        });
    }

    pub mod ipam {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
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
}
