//! The phases of a request that do not depend on how it is answered, so that every front end
//! (the proxy, and any other that decides on requests) runs the same ones: the limits and
//! hygiene checked before routing (`limits`, `hygiene`, `path`, `authority`), the request's
//! context built once a virtual proxy is chosen (`context`), the paths served without
//! identification (`public`), and admission (`admit`: the WebSocket Origin and CSRF checks,
//! the access rules). Identification is `auth::identify`.

pub mod admit;
pub mod authority;
pub mod context;
pub mod hygiene;
pub mod limits;
pub mod path;
pub mod public;
