//! The `dev` provider for `chainfront dev` and tests: no VM is created; the
//! "instance" points at localhost so the credential flow can be exercised end
//! to end on a laptop. It records each instance's authorized keys in memory,
//! so tests can see that a re-key removed the previous owner's key.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Instance, Provider, ProvisionRequest, RekeyRequest};
use crate::Result;

/// Answers at once with a local host; remembers authorized keys.
#[derive(Debug, Default)]
pub struct DevProvider {
    authorized: Mutex<HashMap<String, Vec<String>>>,
}

impl DevProvider {
    /// The public keys (OpenSSH) authorized on `instance_id` now.
    pub fn authorized_keys(&self, instance_id: &str) -> Vec<String> {
        self.keys().get(instance_id).cloned().unwrap_or_default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.authorized
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn local(instance_id: &str) -> Instance {
    Instance {
        instance_id: instance_id.to_owned(),
        host: Some("127.0.0.1".into()),
        username: "root".into(),
        ready: true,
    }
}

impl Provider for DevProvider {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn create<'a>(&'a self, req: &'a ProvisionRequest) -> BoxFuture<'a, Result<Instance>> {
        async move {
            self.keys()
                .entry(req.label.clone())
                .or_insert_with(|| vec![req.ssh_public_key.clone()]);
            Ok(local(&req.label))
        }
        .boxed()
    }

    fn describe<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Instance>> {
        async move { Ok(local(instance_id)) }.boxed()
    }

    fn terminate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            self.keys().remove(instance_id);
            Ok(())
        }
        .boxed()
    }

    fn rekey<'a>(
        &'a self,
        instance_id: &'a str,
        req: &'a RekeyRequest,
    ) -> BoxFuture<'a, Result<Instance>> {
        async move {
            self.keys()
                .insert(instance_id.to_owned(), vec![req.ssh_public_key.clone()]);
            Ok(local(instance_id))
        }
        .boxed()
    }
}
