//! Generated protobuf types for the Check API (our wire-compatible subset of Envoy's protos).
//!
//! Nothing here has logic; the module tree mirrors the proto packages so generated code can
//! refer to its siblings by their package paths.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod envoy {
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
    }
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub use envoy::config::core::v3 as core;
pub use envoy::service::auth::v3 as auth;
