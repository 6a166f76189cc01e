//! The default route of a sandbox: the endpoint with a gateway and the highest
//! `--gw-priority` holds it, the earliest connected among equals (Docker's rule). When the
//! holder leaves, the next in line takes over.

use crate::model::Endpoint;
use crate::net::{NsRef, Step};

pub(crate) fn has_gateway(ep: &Endpoint) -> bool {
    ep.gateway_v4.is_some() || ep.gateway_v6.is_some()
}

/// Does `new` take the default route from the sandbox's current `holder`?
pub(crate) fn wins(new: &Endpoint, holder: Option<&Endpoint>) -> bool {
    has_gateway(new) && holder.is_none_or(|h| new.gw_priority > h.gw_priority)
}

/// Who takes over when the holder leaves: highest priority, then earliest.
pub(crate) fn successor(rest: &[Endpoint]) -> Option<&Endpoint> {
    rest.iter().filter(|e| has_gateway(e)).max_by(|a, b| {
        a.gw_priority
            .cmp(&b.gw_priority)
            .then(b.order.cmp(&a.order))
    })
}

/// The default route steps of an endpoint inside its sandbox.
pub(crate) fn default_route_steps(ep: &Endpoint, ns: &NsRef) -> Vec<Step> {
    let mut v = Vec::new();
    for (gw, dst) in [(ep.gateway_v4, "0.0.0.0/0"), (ep.gateway_v6, "::/0")] {
        if let Some(gw) = gw {
            v.push(Step::Route {
                ns: ns.clone(),
                dst: dst.parse().unwrap(),
                via: Some(gw),
                dev: ep.ifname.clone(),
                metric: None,
                onlink: ep.gateway_onlink,
            });
        }
    }
    v
}

pub(crate) fn is_default_route_inverse(s: &Step) -> bool {
    matches!(s, Step::DelRoute { dst, .. } if dst.prefix() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(order: u64, prio: i64, gw: bool) -> Endpoint {
        Endpoint {
            id: format!("{order}"),
            network_id: String::new(),
            sandbox_id: String::new(),
            name: String::new(),
            ifname: format!("eth{order}"),
            mac: String::new(),
            ipv4: None,
            ipv6: None,
            pool_v4: None,
            pool_v6: None,
            gateway_v4: gw.then(|| "10.0.0.1".parse().unwrap()),
            gateway_v6: None,
            gateway_onlink: false,
            requested_v4: None,
            requested_v6: None,
            aliases: vec![],
            links: vec![],
            driver_opts: Default::default(),
            gw_priority: prio,
            order,
            default_route: false,
            host: None,
        }
    }

    #[test]
    fn priority_then_order() {
        let a = ep(0, 0, true);
        let b = ep(1, 0, true);
        let c = ep(2, 5, true);
        let internal = ep(3, 9, false);
        assert!(wins(&a, None));
        assert!(!wins(&b, Some(&a)), "equal priority: the earlier keeps it");
        assert!(wins(&c, Some(&a)));
        assert!(!wins(&internal, None), "no gateway, no default route");
        assert_eq!(successor(&[a.clone(), b.clone()]).unwrap().id, "0");
        assert_eq!(
            successor(&[b.clone(), c.clone(), internal]).unwrap().id,
            "2"
        );
        assert!(successor(&[]).is_none());
        let steps = default_route_steps(&a, &NsRef::Host);
        assert_eq!(steps.len(), 1);
        assert!(is_default_route_inverse(&steps[0].inverse().unwrap()));
    }
}
