//! CDEvents (specification v0.5.1) carried in CloudEvents 1.0, the vocabulary CI/CD tools share:
//! `incoming` reads what other tools send to `POST /v1/cdevents`, `outgoing` renders committed
//! events for the subscribe stream's `format=cdevents` and for webhooks.
//!
//! Both sides name a release of a service by a package URL, `pkg:generic/<service>@<release>`,
//! the form the specification gives `artifactId`.

pub mod incoming;
pub mod outgoing;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The CDEvents specification version written in every context and accepted in.
pub const SPEC_VERSION: &str = "0.5.1";
/// The CloudEvents specification version of the envelopes.
pub const CLOUDEVENTS_VERSION: &str = "1.0";

/// Characters a package URL keeps as they are in its name and version (its "unreserved" set);
/// everything else is percent-encoded.
const PURL_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_').remove(b'~');

/// The package URL of `release` of `service`.
pub fn artifact_id(service: &str, release: &str) -> String {
    format!("pkg:generic/{}@{}", utf8_percent_encode(service, PURL_ESCAPED), utf8_percent_encode(release, PURL_ESCAPED))
}

/// The version of a package URL (`pkg:type/namespace/name@version?qualifiers#subpath`),
/// percent-decoded; None when it has none or is not a package URL.
pub fn artifact_version(artifact: &str) -> Option<String> {
    let rest = artifact.strip_prefix("pkg:")?;
    let without_suffix = rest.split(['?', '#']).next()?;
    let (_, version) = without_suffix.rsplit_once('@')?;
    let decoded = percent_decode_str(version).decode_utf8().ok()?;
    (!decoded.is_empty()).then(|| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_ids_round_trip_their_release() {
        assert_eq!(artifact_id("web", "1.4.2+build.7"), "pkg:generic/web@1.4.2%2Bbuild.7");
        assert_eq!(artifact_version(&artifact_id("web", "1.4.2+build.7")).as_deref(), Some("1.4.2+build.7"));
    }

    #[test]
    fn artifact_versions_are_read_from_any_package_url() {
        let oci = "pkg:oci/myapp@sha256%3A0b31b1c0?repository_url=ghcr.io/x#sub";
        assert_eq!(artifact_version(oci).as_deref(), Some("sha256:0b31b1c0"));
        assert_eq!(artifact_version("pkg:npm/%40scope/name@2.0.1").as_deref(), Some("2.0.1"));
        assert_eq!(artifact_version("pkg:generic/web"), None);
        assert_eq!(artifact_version("web@1.0"), None);
        assert_eq!(artifact_version("pkg:generic/web@"), None);
    }
}
