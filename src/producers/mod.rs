//! The `producers` side: realistic multi-tenant load ([`load`]), from templates
//! ([`templates`]), with a manifest of what SQS acknowledged ([`manifest`]), and the
//! verifier that checks every acknowledged event ended in the database exactly once
//! ([`verify`]).

pub mod api_sink;
pub mod delivered;
pub mod drain;
pub mod generator;
pub mod load;
pub mod manifest;
pub mod templates;
mod tenants;
pub mod verify;

pub use tenants::tenants;
