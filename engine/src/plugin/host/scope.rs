//! What a plugin call may reach ([`Scope`]): the subnets of the network in play, and the host
//! links weft's records say the plugin made — read from the records only when a call first
//! needs them.

use super::*;

/// What a call may reach: the network in play's subnets, and the links weft's records say
/// this plugin made (for that network, or for all its networks when there is none in play).
/// The records are read when a call first needs them: most calls touch only links they made
/// themselves, and pay nothing for the check.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub nets: Vec<IpNetwork>,
    pub records: Records,
    pub(super) links: Option<HashSet<String>>,
}

/// Where the records of a plugin's links are.
#[derive(Debug, Clone, Default)]
pub enum Records {
    /// None (install-time calls).
    #[default]
    None,
    /// These owned-record keys (a network's, an endpoint's).
    Keys(Vec<String>),
    /// Every network of this driver (discover-new/delete).
    AllNetworksOf(String),
}

impl Scope {
    pub fn new(nets: Vec<IpNetwork>, records: Records) -> Scope {
        Scope {
            nets,
            records,
            links: None,
        }
    }
}

/// The host links among `steps` (undo steps: the deletes of what was made) whose names are
/// within the plugin's prefix.
pub fn links_made(steps: &[Step], grants: &crate::plugin::grants::Grants) -> HashSet<String> {
    steps
        .iter()
        .flat_map(|s| match s {
            Step::DelLink {
                ns: NsRef::Host,
                name,
                peer,
            } => {
                let mut v = vec![name.clone()];
                if let Some((NsRef::Host, p)) = peer {
                    v.push(p.clone());
                }
                v
            }
            _ => vec![],
        })
        .filter(|n| grants.owns_link(n))
        .collect()
}

/// The steps weft's records own under `records`.
pub fn recorded_steps(
    store: &dyn crate::store::ReadTxn,
    records: &Records,
) -> crate::Result<Vec<Step>> {
    use crate::engine::records::{net_key, owned};
    let mut steps = Vec::new();
    match records {
        Records::None => {}
        Records::Keys(keys) => {
            for k in keys {
                steps.extend(owned(store, k)?);
            }
        }
        Records::AllNetworksOf(driver) => {
            for n in crate::store::list_json::<crate::model::Network>(store, Table::Networks)? {
                if n.driver == *driver {
                    steps.extend(owned(store, &net_key(&n.id))?);
                }
            }
        }
    }
    Ok(steps)
}
