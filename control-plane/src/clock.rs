//! Time as the control plane sees it, injectable so that TTL logic is tested without
//! sleeping. The clock is shared with the data plane, so it lives in `gatehouse-runtime`.

pub use gatehouse_runtime::clock::*;
