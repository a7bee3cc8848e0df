//! What a run binds that templates name: its ports (`{{ port.NAME }}`), chosen on first
//! use, and where its listeners were bound (`{{ channel.NAME.url }}`), known once they
//! started.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use roundtrip_core::template::AddressPart;

use crate::transport::BoundAddress;

/// How many times a port is drawn before giving up on one not already chosen.
const DRAWS: usize = 16;

/// A run's ports and listener addresses.
#[derive(Debug)]
pub(crate) struct Bindings {
    ports: Mutex<Ports>,
    channels: Mutex<BTreeMap<String, BoundAddress>>,
}

#[derive(Debug)]
struct Ports {
    chosen: BTreeMap<String, u16>,
    /// The sockets that hold the chosen ports until the SUT starts, so that nothing this
    /// run binds meanwhile (a webhook on port 0) can be given one of them.
    held: Vec<TcpListener>,
    released: bool,
}

impl Bindings {
    /// Nothing chosen, nothing bound.
    pub(crate) const fn new() -> Bindings {
        Bindings {
            ports: Mutex::new(Ports {
                chosen: BTreeMap::new(),
                held: Vec::new(),
                released: false,
            }),
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    /// The port called `name`: free on 127.0.0.1 when first asked for, then the same for
    /// the rest of the run, and distinct from the run's other ports.
    pub(crate) fn port(&self, name: &str) -> Result<u16, String> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(port) = ports.chosen.get(name) {
            return Ok(*port);
        }
        for _ in 0..DRAWS {
            let socket = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
            let port = socket
                .local_addr()
                .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
                .port();
            if ports.chosen.values().any(|p| *p == port) {
                continue;
            }
            ports.chosen.insert(name.to_owned(), port);
            if !ports.released {
                ports.held.push(socket);
            }
            return Ok(port);
        }
        Err(format!(
            "no port distinct from the run's others after {DRAWS} tries"
        ))
    }

    /// Lets the chosen ports go, for the SUT to bind them; a port chosen later is free
    /// at once.
    pub(crate) fn release_ports(&self) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.held.clear();
        ports.released = true;
    }

    /// Records where `channel`'s listener was bound.
    pub(crate) fn bind_channel(&self, channel: &str, address: BoundAddress) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.to_owned(), address);
    }

    /// Where `channel`'s listener was bound, as `part` asks.
    pub(crate) fn channel_address(
        &self,
        channel: &str,
        part: AddressPart,
    ) -> Result<String, String> {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let bound = channels.get(channel).ok_or_else(|| {
            format!("channel `{channel}` has no listener bound to an address in this run")
        })?;
        Ok(match part {
            AddressPart::Url => bound.url.clone(),
            AddressPart::Addr => bound.addr.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_chosen_once_per_name_and_held_until_released() {
        let bindings = Bindings::new();
        let a = bindings.port("a").expect("a port");
        assert_eq!(bindings.port("a"), Ok(a), "the same name, the same port");
        let b = bindings.port("b").expect("another port");
        assert_ne!(a, b);
        // Held: nobody else can bind it before the SUT starts.
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, a)).is_err());
        bindings.release_ports();
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, a)).expect("released for the SUT");
        drop(taken);
        // Chosen after the release: free at once.
        let c = bindings.port("c").expect("a third port");
        TcpListener::bind((Ipv4Addr::LOCALHOST, c)).expect("not held");
    }

    #[test]
    fn channel_addresses_are_known_once_bound() {
        let bindings = Bindings::new();
        let missing = bindings.channel_address("out", AddressPart::Url);
        assert!(
            missing
                .expect_err("unbound")
                .contains("`out` has no listener")
        );
        let local = "0.0.0.0:41234".parse().expect("addr");
        bindings.bind_channel("out", BoundAddress::http(local, "/processed"));
        assert_eq!(
            bindings.channel_address("out", AddressPart::Url).as_deref(),
            Ok("http://127.0.0.1:41234/processed")
        );
        assert_eq!(
            bindings
                .channel_address("out", AddressPart::Addr)
                .as_deref(),
            Ok("127.0.0.1:41234")
        );
    }
}
