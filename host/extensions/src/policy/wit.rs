//! The versions of the policy plugin world this host serves, one module per version
//! (`since_v0_1_0`, `since_v0_2_0`), each with its own bindings generated from
//! `wit/policy/vX.Y.Z/`.
//!
//! The newest version ([`latest`]) holds the host's implementation of every import, and its
//! generated types are the chain's own ([`super::WitRequest`], [`super::PolicyContext`]).
//! An older version forwards each import to the newest and converts its types at the edge.
//! A published version never changes: a new import or field is a new version, added as a
//! module here and to [`PolicyPre::new`].
//!
//! One linker serves every version: each version's host interfaces are added to it, so a
//! chain can mix plugins built against different versions. Which version a component
//! implements is found from what it exports, with each version's generated `*Pre` type.

mod since_v0_1_0;
pub(crate) mod since_v0_2_0;

pub(crate) use since_v0_2_0 as latest;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::instance::HostState;
use super::{PolicyContext, WitRequest};

/// Adds the `host` interface of every version to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    since_v0_1_0::PolicyPlugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    latest::PolicyPlugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// A component pre-instantiated as the version of the world it implements.
pub(crate) enum PolicyPre {
    V0_1_0(since_v0_1_0::PolicyPluginPre<HostState>),
    V0_2_0(latest::PolicyPluginPre<HostState>),
}

/// An instance's exports, of the version its component implements.
pub(crate) enum PolicyBindings {
    V0_1_0(since_v0_1_0::PolicyPlugin),
    V0_2_0(latest::PolicyPlugin),
}

impl PolicyPre {
    /// The newest version whose exports the component has. The error lists, for every
    /// version, the export the bindings looked for and did not find.
    pub fn new(pre: InstancePre<HostState>) -> anyhow::Result<Self> {
        let newest = match latest::PolicyPluginPre::new(pre.clone()) {
            Ok(p) => return Ok(Self::V0_2_0(p)),
            Err(e) => e,
        };
        let oldest = match since_v0_1_0::PolicyPluginPre::new(pre) {
            Ok(p) => return Ok(Self::V0_1_0(p)),
            Err(e) => e,
        };
        anyhow::bail!(
            "it does not implement a policy plugin world this host serves (a policy plugin \
             exports the `policy` interface with `on-start`): {newest}; {oldest}"
        )
    }

    /// The version of `procwarden:policy` the component was built against.
    pub fn version(&self) -> &'static str {
        match self {
            Self::V0_1_0(_) => since_v0_1_0::VERSION,
            Self::V0_2_0(_) => latest::VERSION,
        }
    }

    pub async fn instantiate_async(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<PolicyBindings> {
        Ok(match self {
            Self::V0_1_0(pre) => PolicyBindings::V0_1_0(pre.instantiate_async(store).await?),
            Self::V0_2_0(pre) => PolicyBindings::V0_2_0(pre.instantiate_async(store).await?),
        })
    }
}

impl PolicyBindings {
    /// Calls `on-start`; the decision comes back in the newest version's types.
    pub async fn on_start(
        &self,
        store: &mut Store<HostState>,
        req: &WitRequest,
        ctx: &PolicyContext,
    ) -> wasmtime::Result<latest::Decision> {
        match self {
            Self::V0_1_0(b) => since_v0_1_0::on_start(b, store, req, ctx).await,
            Self::V0_2_0(b) => {
                b.procwarden_policy_policy()
                    .call_on_start(store, req, ctx)
                    .await
            }
        }
    }
}

/// The process layer's request moves into the newest WIT's record and back: same fields,
/// no copies.
impl From<procwarden_process::StartRequest> for WitRequest {
    fn from(req: procwarden_process::StartRequest) -> Self {
        let procwarden_process::StartRequest {
            command,
            workdir,
            env,
            background,
            timeout_seconds,
        } = req;
        Self {
            command,
            workdir,
            env,
            background,
            timeout_seconds,
        }
    }
}

impl From<WitRequest> for procwarden_process::StartRequest {
    fn from(req: WitRequest) -> Self {
        let WitRequest {
            command,
            workdir,
            env,
            background,
            timeout_seconds,
        } = req;
        Self {
            command,
            workdir,
            env,
            background,
            timeout_seconds,
        }
    }
}
