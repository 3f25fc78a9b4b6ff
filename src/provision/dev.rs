//! The `dev` provider for `chainfront dev` and tests: no VM is created; the
//! "instance" points at localhost so the credential flow can be exercised end
//! to end on a laptop.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Instance, Provider, ProvisionRequest};
use crate::Result;

/// Answers at once with a local host.
#[derive(Debug, Default)]
pub struct DevProvider;

impl Provider for DevProvider {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn create<'a>(&'a self, req: &'a ProvisionRequest) -> BoxFuture<'a, Result<Instance>> {
        async move {
            Ok(Instance {
                instance_id: req.label.clone(),
                host: Some("127.0.0.1".into()),
                username: "root".into(),
                ready: true,
            })
        }
        .boxed()
    }

    fn describe<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Instance>> {
        async move {
            Ok(Instance {
                instance_id: instance_id.to_owned(),
                host: Some("127.0.0.1".into()),
                username: "root".into(),
                ready: true,
            })
        }
        .boxed()
    }

    fn terminate<'a>(&'a self, _instance_id: &'a str) -> BoxFuture<'a, Result<()>> {
        async { Ok(()) }.boxed()
    }
}
