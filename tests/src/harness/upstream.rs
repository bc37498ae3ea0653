//! The echo upstream of the tests: the kit's [`EchoUpstream`](gatehouse_testkit::EchoUpstream)
//! in its echoing kind (every answer is what it received, as JSON), started or the test fails.

use std::ops::{Deref, DerefMut};

/// A running echo upstream; stopped when dropped.
#[derive(Debug)]
pub struct EchoUpstream(gatehouse_testkit::EchoUpstream);

impl EchoUpstream {
    /// Starts an upstream that names itself `name` in every answer.
    pub async fn start(name: &str) -> Self {
        let upstream = gatehouse_testkit::EchoUpstream::start(name).await;
        Self(upstream.expect("bind the echo upstream"))
    }
}

impl Deref for EchoUpstream {
    type Target = gatehouse_testkit::EchoUpstream;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for EchoUpstream {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
