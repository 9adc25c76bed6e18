//! What the shim answers containerd's `-info`: the OCI runtime features it gives a container
//! (the JSON of `runc features`). containerd reads only `mountExtensions.idmap` of them, before
//! it creates a container with idmapped mounts, and refuses the container unless it is on.
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::RuntimeInfo;
use oci_spec::runtime::{Features, FeaturesBuilder, IDMapBuilder, LinuxFeatureBuilder, LinuxNamespaceType, MountExtensionsBuilder};

/// The type URL under which containerd registered the runtime-spec's features (as JSON).
const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

pub fn runtime_info(name: &str) -> RuntimeInfo {
    let mut info = RuntimeInfo { name: name.into(), ..Default::default() };
    let features = serde_json::to_vec(&features()).expect("the features serialize");
    info.features = Some(Any { type_url: FEATURES_TYPE.into(), value: features, ..Default::default() }).into();
    info
}

/// What a wasm container is given; anything not named is unknown, not refused (the plan
/// refuses what it cannot give, in one line, at create).
fn features() -> Features {
    use LinuxNamespaceType::*;
    let idmap = MountExtensionsBuilder::default().idmap(IDMapBuilder::default().enabled(true).build().expect("idmap")).build().expect("mount extensions");
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![Mount, Pid, Uts, Ipc, Network, Cgroup, User])
        .mount_extensions(idmap)
        .build()
        .expect("linux features");
    FeaturesBuilder::default().oci_version_min("1.0.0").oci_version_max("1.2.1").linux(linux).build().expect("features")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON containerd unmarshals into runtime-spec's `features.Features`.
    #[test]
    fn idmapped_mounts_are_announced_as_containerd_reads_them() {
        let info = runtime_info("io.containerd.wasmedge.v1");
        assert_eq!(info.features.type_url, FEATURES_TYPE);
        let json: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
        assert_eq!(json["linux"]["mountExtensions"]["idmap"]["enabled"], true, "{json}");
        assert!(json["linux"]["namespaces"].as_array().unwrap().contains(&"user".into()), "{json}");
    }
}
