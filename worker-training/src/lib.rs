//! `worker-training`: the live training worker ([`worker`]; its run thread in [`run`], the
//! controls and the replayer in [`control`], what it sends in [`outbox`]) and the offline trainer
//! ([`offline`]), both driving the DQN core of `hamlet-dqn`.

pub mod control;
pub mod offline;
pub mod outbox;
pub mod run;
pub mod worker;
