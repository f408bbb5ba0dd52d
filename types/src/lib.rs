//! The JSON shapes of fleetlog's HTTP API, in one place: the server writes its answers through
//! these types and the clients (the CLI, the agent, `fleetlog verify`) read them back into the
//! same types, so a field renamed on one side is a compile error or a failing round-trip test
//! rather than a silent `null`.
//!
//! Shapes the server writes in hot paths borrow what they serialise (`Cow<'a, str>`): the server
//! fills them with borrowed record data, a client deserialises them owned (`HostView<'static>`).
//! Events are served as their canonical JSON text, never re-serialised; [`Event`] is how a
//! client reads that text.
//!
//! Field order is the order on the wire: the structs declare their fields in the order the server
//! has always written them.

pub mod alert;
pub mod audit;
pub mod calendar;
pub mod cdevents;
pub mod cluster;
pub mod deployment;
pub mod dora;
pub mod error;
pub mod event;
pub mod health;
pub mod host;
pub mod policy;
pub mod release;
pub mod webhook;

pub use alert::{AlertList, AlertView, AlertmanagerAnswer};
pub use audit::{ConsistencyProof, InclusionProof};
pub use calendar::{CalendarList, CalendarView, FreezeScope, OpenWindow, Window};
pub use cdevents::CdEventsAnswer;
pub use cluster::{ClusterStatus, NodeView, ThisNode};
pub use deployment::{
    Deployment, DeploymentDetail, DeploymentFailure, DeploymentList, GateStatus, Halt, Override, Selector, Step, Wave,
    WaveHosts,
};
pub use dora::{DoraDeployment, DoraRecovery, DoraReport};
pub use error::{ErrorBody, ErrorDetail};
pub use event::{
    AppendAnswer, AppendedEvent, CommandAnswer, DecisionList, Event, EventPage, PolicyDecision, PolicyEventData,
    StreamPage,
};
pub use health::{Health, Ready, WhoAmI};
pub use host::{
    Directive, FailureView, FleetDiff, FleetSummary, FleetView, HealthView, Host, HostChange, HostDocument, HostView,
    WatchState,
};
pub use policy::{Amount, Policy, PolicyView, WaveGates};
pub use release::{EnvironmentView, ReleaseView, ReleasesView, TimelineEntry};
pub use webhook::{WebhookCreated, WebhookList, WebhookRemoved, WebhookRequest, WebhookView};
