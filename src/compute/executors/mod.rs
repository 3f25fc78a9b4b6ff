//! The executors, one per service, and which services this node offers.

pub mod code;
pub mod command;
pub mod data;
pub mod llm;
pub mod storage;
pub mod web;

use std::collections::BTreeMap;
use std::sync::Arc;

use chainfront_indexer::conn::RedisConn;

use super::executor::Executor;
use super::ssrf::Guard;

/// Executors by service, the services that answer 501 with why, and the
/// LLM executor itself (streams bypass the queue).
pub type Built = (
    BTreeMap<String, Arc<dyn Executor>>,
    BTreeMap<String, String>,
    Option<Arc<llm::Llm>>,
);

/// Builds every executor the configuration offers.
pub fn build(
    cfg: &crate::config::Config,
    conn: RedisConn,
    guard: Guard,
    data: data::DataSources,
) -> crate::Result<Built> {
    let c = &cfg.compute;
    let mut ex: BTreeMap<String, Arc<dyn Executor>> = BTreeMap::new();
    let mut off: BTreeMap<String, String> = BTreeMap::new();
    ex.insert(
        "storage".into(),
        Arc::new(storage::Storage::new(conn, c.storage.clone())),
    );
    ex.insert("data".into(), Arc::new(data::Data::new(data)));
    ex.insert("web".into(), Arc::new(web::Web::new(guard, c.web.clone())));
    let llm = match llm::Llm::new(
        c.llm.clone(),
        cfg.secrets
            .llm_api_key
            .as_ref()
            .map(|s| s.expose().to_owned()),
    ) {
        Ok(l) => {
            let l = Arc::new(l);
            ex.insert("llm".into(), l.clone());
            Some(l)
        }
        Err(why) => {
            off.insert("llm".into(), why);
            None
        }
    };
    match code::Code::new(c.code.clone()) {
        Ok(x) => {
            ex.insert("code".into(), Arc::new(x));
        }
        Err(why) => {
            tracing::warn!(target: "chainfront::compute", reason = %why, "code service unavailable");
            off.insert("code".into(), why);
        }
    }
    for svc in ["trade", "gpu", "ml"] {
        if !c.commands.contains_key(svc) {
            off.insert(
                svc.into(),
                format!("the `{svc}` service is not offered by this node (an operator can map it to a command: compute.commands.{svc})"),
            );
        }
    }
    for (svc, argv) in &c.commands {
        let Some(cmd) = command::CommandService::new(svc, argv) else {
            return Err(crate::Error::Config {
                key: format!("compute.commands.{svc}"),
                message: "must name a program".into(),
            });
        };
        off.remove(svc);
        ex.insert(svc.clone(), Arc::new(cmd));
    }
    Ok((ex, off, llm))
}
