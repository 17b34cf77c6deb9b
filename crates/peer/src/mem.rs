//! The in-process transport: the node code runs unchanged, its peers are
//! handlers in the same process, and tests cut links.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{BoxFuture, DEFAULT_FRAME_LIMIT, PeerHandler, PeerTransport, Service, TransportError};

/// Faults a [`MemTransport`] injects into every call, drawn from one
/// seeded generator: a simulation with the same seed meets the same
/// sequence of draws.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// The chance that a request is lost (the caller waits out its time
    /// limit, as for a packet that never arrives).
    pub lose_request: f64,
    /// The chance that an answer is lost after the handler ran (the caller
    /// times out, not knowing the call took effect).
    pub lose_answer: f64,
    /// Each request and each answer is delayed by a duration drawn from
    /// this range; concurrent calls are thereby reordered.
    pub delay: (Duration, Duration),
    /// The generator's seed.
    pub seed: u64,
}

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
    /// Each address's handler, and a sender dropped when it is
    /// unregistered: calls in flight to it end then, as they would when a
    /// process dies.
    handlers: HashMap<String, (Arc<dyn PeerHandler>, watch::Sender<()>)>,
    cut: BTreeSet<(String, String)>,
    frame: usize,
    faults: Option<(Faults, SmallRng)>,
}

/// What the faults decided for one call.
struct Fate {
    request_delay: Duration,
    answer_delay: Duration,
    lose_request: bool,
    lose_answer: bool,
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
                faults: None,
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
        let (alive, _) = watch::channel(());
        self.net()
            .handlers
            .insert(addr.to_owned(), (handler, alive));
    }

    /// Makes `addr` unreachable, as a crashed process is: calls in flight
    /// to it end with [`TransportError::Lost`], and their handlers stop at
    /// their next wait.
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

    /// Injects `faults` into every later call (`None`: none).
    pub fn set_faults(&self, faults: Option<Faults>) {
        self.net().faults = faults.map(|f| (f, SmallRng::seed_from_u64(f.seed)));
    }

    fn fate(&self) -> Fate {
        let mut net = self.net();
        let Some((f, rng)) = net.faults.as_mut() else {
            return Fate {
                request_delay: Duration::ZERO,
                answer_delay: Duration::ZERO,
                lose_request: false,
                lose_answer: false,
            };
        };
        let mut delay = || {
            if f.delay.1 > f.delay.0 {
                rng.random_range(f.delay.0..f.delay.1)
            } else {
                f.delay.0
            }
        };
        let (request_delay, answer_delay) = (delay(), delay());
        Fate {
            request_delay,
            answer_delay,
            lose_request: rng.random_bool(f.lose_request),
            lose_answer: rng.random_bool(f.lose_answer),
        }
    }

    fn route(&self, to: &str) -> Result<(Arc<dyn PeerHandler>, watch::Receiver<()>), String> {
        let net = self.net();
        if let Some(from) = &self.from
            && net.cut.contains(&link(from, to))
        {
            return Err("the link is cut".into());
        }
        net.handlers
            .get(to)
            .map(|(handler, alive)| (Arc::clone(handler), alive.subscribe()))
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
            let (handler, mut alive) =
                self.route(&addr)
                    .map_err(|why| TransportError::Unreachable {
                        addr: addr.clone(),
                        why,
                    })?;
            let fate = self.fate();
            let timeout = TransportError::Timeout {
                addr: addr.clone(),
                service,
                limit,
            };
            let trip = async {
                tokio::time::sleep(fate.request_delay).await;
                if fate.lose_request {
                    std::future::pending::<()>().await;
                }
                let answer = handler.handle(service, body).await;
                tokio::time::sleep(fate.answer_delay).await;
                if fate.lose_answer {
                    std::future::pending::<()>().await;
                }
                answer
            };
            let answer = tokio::select! {
                answer = tokio::time::timeout(limit, trip) => answer.map_err(|_| timeout)?,
                // Only ever closed: the handler was unregistered.
                _ = alive.changed() => {
                    return Err(TransportError::Lost {
                        addr,
                        service,
                        why: "the peer stopped during the call".into(),
                    });
                }
            };
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
