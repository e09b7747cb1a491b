//! Worker processes: spawned and authenticated ([`supervisor`]), each a child with its own process
//! group, reaped and signalled only through a pidfd ([`process`]), listed for operators
//! ([`registry`]), kept warm ([`pool`]), and replaced when they fail ([`replacement`], within the
//! [`budget`]). Sessions and the training run use them; nothing here knows either.

pub mod budget;
pub mod pool;
pub mod process;
pub mod registry;
pub mod replacement;
pub mod supervisor;
