//! What a leader checks before it writes a membership change. Pure: the running node and the
//! cluster simulator apply the same rule.

use openraft::{BasicNode, Membership};

use crate::consensus::types::NodeId;

/// The voter `leader` should hand leadership to before it changes `membership`, or `None` when
/// it may change it itself.
///
/// A change is computed from the last configuration of the membership (the new one, when a
/// joint change was interrupted). A leader that is not a voter there — an earlier change that
/// removed it was cut short, and it was elected under the joint configuration that still held
/// it — would write a membership without itself, and then have to write the second step of
/// the change while outside both the effective and the committed membership. openraft does
/// not support a leader there (its debug builds stop the node on an assertion). A voter of the
/// last configuration can make any change, the interrupted one's completion included.
///
/// `matched` is the last log index the leader knows each node holds; the handover goes to the
/// voter furthest along, so that it can win the election the handover starts.
pub fn handover_target(
    membership: &Membership<NodeId, BasicNode>,
    leader: NodeId,
    matched: impl Fn(NodeId) -> Option<u64>,
) -> Option<NodeId> {
    let last = membership.get_joint_config().last()?;
    if last.contains(&leader) {
        return None;
    }
    // Ties go to the lowest id: every node that asks picks the same voter.
    last.iter().copied().max_by_key(|voter| (matched(*voter), std::cmp::Reverse(*voter)))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn membership(configs: &[&[NodeId]]) -> Membership<NodeId, BasicNode> {
        let configs: Vec<BTreeSet<NodeId>> = configs.iter().map(|config| config.iter().copied().collect()).collect();
        let nodes: BTreeMap<NodeId, BasicNode> =
            configs.iter().flatten().map(|node| (*node, BasicNode { addr: format!("node-{node}") })).collect();
        Membership::new(configs, nodes).expect("a valid membership")
    }

    #[test]
    fn a_voter_of_the_last_configuration_changes_the_membership_itself() {
        assert_eq!(handover_target(&membership(&[&[1, 2, 3]]), 1, |_| None), None);
        assert_eq!(handover_target(&membership(&[&[1, 2], &[1, 3]]), 1, |_| None), None);
    }

    #[test]
    fn a_leader_an_interrupted_removal_left_out_hands_over_to_the_voter_furthest_along() {
        // Removing node 1 stopped at the joint configuration; node 1 then won an election.
        let joint = membership(&[&[1, 2, 3], &[2, 3]]);
        let matched = |node| match node {
            2 => Some(40),
            3 => Some(41),
            _ => None,
        };
        assert_eq!(handover_target(&joint, 1, matched), Some(3));
        assert_eq!(handover_target(&joint, 1, |_| Some(7)), Some(2), "a tie goes to the lowest id");
    }

    #[test]
    fn a_leader_outside_a_uniform_membership_hands_over() {
        assert_eq!(handover_target(&membership(&[&[2, 3]]), 1, |_| None), Some(2));
    }
}
