//! A Cloud Run service as one pass saw it, and the snapshot of everything a pass read.
//!
//! `LiveState` is a plain value: the plan reads it and never does I/O, so everything the plan
//! needs from Google and Auth0 must be in here, already converted from wire types.

use std::collections::BTreeMap;
use std::fmt;

use crate::iam::Policy;
use crate::model::Directory;
use crate::policy::model::Ingress;

/// `projects/P/locations/R/services/S`, split. Ordered by project, region, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub project: String,
    pub region: String,
    pub name: String,
}

impl ServiceId {
    pub fn new(project: &str, region: &str, name: &str) -> ServiceId {
        ServiceId {
            project: project.into(),
            region: region.into(),
            name: name.into(),
        }
    }

    /// The Cloud Run resource name.
    pub fn resource_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/services/{}",
            self.project, self.region, self.name
        )
    }

    /// The IAP resource name for this service, given the project's number.
    pub fn iap_resource_name(&self, project_number: u64) -> String {
        format!(
            "projects/{project_number}/iap_web/cloud_run-{}/services/{}",
            self.region, self.name
        )
    }

    /// Parses `projects/P/locations/R/services/S`.
    pub fn parse(resource: &str) -> Option<ServiceId> {
        let parts: Vec<&str> = resource.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "locations", r, "services", s]
                if !p.is_empty() && !r.is_empty() && !s.is_empty() =>
            {
                Some(ServiceId::new(p, r, s))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.project, self.region, self.name)
    }
}

/// Everything one pass read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveState {
    /// Every service listed in scope (governed or not), by id.
    pub services: BTreeMap<ServiceId, LiveService>,
    /// Project id → project number (needed for IAP resource names and the IAP service agent).
    pub project_numbers: BTreeMap<String, u64>,
    /// Project id → its parent (`folders/N`, `organizations/N`, or none), for the projects
    /// whose `projects.get` the pass read anyway (for the number): effective access does not
    /// read them again.
    pub project_parents: BTreeMap<String, Option<String>>,
    /// The Auth0 directory, as far as policies need it.
    pub directory: Directory,
    /// With `--shard`: the services listed that belong to other shards (id → labels), neither
    /// kept nor read. A policy reference matching only these is not "unmatched".
    pub other_shards: BTreeMap<ServiceId, BTreeMap<String, String>>,
}

/// One Cloud Run service's settings and, when governed, its IAM policies.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveService {
    pub id: ServiceId,
    pub labels: BTreeMap<String, String>,
    /// Every annotation as read (carried over when apply writes the last-applied record).
    pub annotations: BTreeMap<String, String>,
    pub settings: ServiceSettings,
    /// The service's own etag (used by `services.patch`).
    pub etag: String,
    /// The service URL (`uri`), for audience checks.
    pub uri: Option<String>,
    /// The service's IAM policy, read at version 3. `None` when the service is not governed (not
    /// read) or the read failed (see `read_error`).
    pub iam: Option<Policy>,
    /// The IAP resource's IAM policy, read when the service has or should have IAP.
    pub iap_iam: Option<Policy>,
    /// A read that failed for this service (for example a 403): the plan reports it and plans
    /// nothing for the service, rather than treating it as empty.
    pub read_error: Option<String>,
}

/// The exposure-related settings of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSettings {
    /// `None` when the API reports `INGRESS_TRAFFIC_UNSPECIFIED` (no active revision).
    pub ingress: Option<Ingress>,
    pub invoker_iam_disabled: bool,
    pub custom_audiences: Vec<String>,
    pub iap_enabled: bool,
}

