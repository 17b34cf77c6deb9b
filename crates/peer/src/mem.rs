//! The in-process transport: the node code runs unchanged, its peers are
//! handlers in the same process, and tests cut links.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{BoxFuture, DEFAULT_FRAME_LIMIT, PeerHandler, PeerTransport, Service, TransportError};

/// Peers in one process, by address. Each node calls through its own view
/// ([`MemTransport::node`]), which knows its address, so that a link
/// between two addresses can be cut both ways.
#[derive(Clone)]
pub struct MemTransport {
    net: Arc<Mutex<Net>>,
    /// The calling node's address (`None`: a caller outside the group,
    /// which no cut affects).
    from: Option<String>,
}

struct Net {
    handlers: HashMap<String, Arc<dyn PeerHandler>>,
    cut: BTreeSet<(String, String)>,
    frame: usize,
}

impl Default for MemTransport {
    fn default() -> Self {
        MemTransport::new(DEFAULT_FRAME_LIMIT)
    }
}

fn link(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl MemTransport {
    /// An empty network whose messages are at most `frame` bytes.
    pub fn new(frame: usize) -> MemTransport {
        MemTransport {
            net: Arc::new(Mutex::new(Net {
                handlers: HashMap::new(),
                cut: BTreeSet::new(),
                frame,
            })),
            from: None,
        }
    }

    fn net(&self) -> std::sync::MutexGuard<'_, Net> {
        // Inserts and removals only: a poisoned net is still whole.
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The view of the node at `addr`, for its calls.
    pub fn node(&self, addr: &str) -> MemTransport {
        MemTransport {
            net: Arc::clone(&self.net),
            from: Some(addr.to_owned()),
        }
    }

    /// Makes `handler` answer at `addr`.
    pub fn register(&self, addr: &str, handler: Arc<dyn PeerHandler>) {
        self.net().handlers.insert(addr.to_owned(), handler);
    }

    /// Makes `addr` unreachable, as a crashed process is.
    pub fn unregister(&self, addr: &str) {
        self.net().handlers.remove(addr);
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.net().cut.insert(link(a, b));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.net().cut.clear();
    }

    fn route(&self, to: &str) -> Result<Arc<dyn PeerHandler>, String> {
        let net = self.net();
        if let Some(from) = &self.from
            && net.cut.contains(&link(from, to))
        {
            return Err("the link is cut".into());
        }
        net.handlers
            .get(to)
            .cloned()
            .ok_or_else(|| "nothing listens there".into())
    }
}

impl PeerTransport for MemTransport {
    fn call(
        &self,
        addr: &str,
        service: Service,
        body: Vec<u8>,
        limit: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let frame = self.net().frame;
            if body.len() > frame {
                return Err(TransportError::TooLarge {
                    addr,
                    service,
                    len: body.len(),
                    limit: frame,
                });
            }
            let handler = self
                .route(&addr)
                .map_err(|why| TransportError::Unreachable {
                    addr: addr.clone(),
                    why,
                })?;
            let answer = tokio::time::timeout(limit, handler.handle(service, body))
                .await
                .map_err(|_| TransportError::Timeout {
                    addr: addr.clone(),
                    service,
                    limit,
                })?;
            // A link cut during the call loses the answer.
            if let Err(why) = self.route(&addr) {
                return Err(TransportError::Lost { addr, service, why });
            }
            match answer {
                Ok(answer) if answer.len() > frame => Err(TransportError::Lost {
                    addr,
                    service,
                    why: format!(
                        "the answer of {} bytes is over the frame limit",
                        answer.len()
                    ),
                }),
                Ok(answer) => Ok(answer),
                Err(why) => Err(TransportError::Refused { addr, service, why }),
            }
        })
    }
}
