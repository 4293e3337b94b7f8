//! Fleets: what each node tells the others, and the operator, through the
//! target alone. With `node_id` set, every stream keeps a small heartbeat
//! object `STREAM/nodes/NODE_ID` current ([`publisher`]) in a documented
//! text format ([`heartbeat`]); [`view`] reads them back, judging ages by
//! the store's clock, for `walship fleet`.

pub mod heartbeat;
pub mod publisher;
pub mod view;
