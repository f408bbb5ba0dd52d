//! openraft's own storage suite against the simulator's in-memory log store and state machine,
//! as the RocksDB stores pass it: the simulated nodes stand on storage openraft accepts.

use std::time::Duration;

use fleetlog_sim::checker::Checker;
use fleetlog_sim::disk::Disk;
use fleetlog_sim::runtime::SimConfig;
use fleetlog_sim::storage::{LogStore, StateMachine};
use fleetlog_sim::trace::Trace;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct MemoryBuilder;

impl StoreBuilder<SimConfig, LogStore, StateMachine, Checker> for MemoryBuilder {
    async fn build(&self) -> Result<(Checker, LogStore, StateMachine), StorageError<SimConfig>> {
        let disk = Disk::new(Duration::ZERO);
        let checker = Checker::new(Trace::new(false));
        let state_machine = StateMachine::open(1, disk.clone(), checker.clone(), None);
        Ok((checker, LogStore::open(disk, None), state_machine))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn openraft_storage_suite_passes() {
    Suite::test_all(MemoryBuilder).await.expect("storage suite");
}
