//! `worker-training`: the live training worker ([`worker`], its run thread in [`run`]) and the
//! offline trainer ([`offline`]), both driving the DQN core of `hamlet-dqn`.

pub mod offline;
pub mod run;
pub mod worker;
