//! The vocabulary the endpoint descriptions are written in: an [`Endpoint`] gathers one
//! operation (its parameters, body and answers) and the schemas it refers to; a [`Document`]
//! puts the endpoints and their schemas together.

use std::collections::{BTreeMap, BTreeSet};

use fleetlog_raft::domain::limits::{NAME_CHARS_MAX, STREAM_CHARS_MAX};
use fleetlog_types::ErrorBody;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, Content, HeaderBuilder, HttpMethod, InfoBuilder, KnownFormat, OpenApi, OpenApiBuilder, Paths,
    Ref, RefOr, Required, ResponseBuilder, Schema, SecurityRequirement,
};
use utoipa::{PartialSchema, ToSchema};

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearer";

/// The kinds of value a parameter takes.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Free text: a filter value, a reason, a token.
    Text,
    /// A service, env, host, deployment, wave or group name.
    Name,
    /// A release name: a name that may also hold `+`.
    Release,
    /// A stream name: a name that may also hold `/`.
    Stream,
    /// A whole number ≥ 0 (a seq, a size, a version, a count).
    Number,
    /// An RFC 3339 time.
    Time,
}

impl Kind {
    fn schema(self) -> Schema {
        let builder = ObjectBuilder::new();
        let builder = match self {
            Kind::Text => builder.schema_type(Type::String),
            Kind::Name => name(builder, "^[A-Za-z0-9._-]+$", NAME_CHARS_MAX),
            Kind::Release => name(builder, "^[A-Za-z0-9._+-]+$", NAME_CHARS_MAX),
            Kind::Stream => name(builder, "^[A-Za-z0-9._/-]+$", STREAM_CHARS_MAX),
            Kind::Number => builder
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0)),
            Kind::Time => {
                builder.schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            }
        };
        Schema::Object(builder.build())
    }
}

/// A name's schema: the characters it may hold and its length (docs/api.md, "Names").
fn name(builder: ObjectBuilder, pattern: &str, chars_max: usize) -> ObjectBuilder {
    builder.schema_type(Type::String).pattern(Some(pattern)).min_length(Some(1)).max_length(Some(chars_max))
}

/// One operation: a method on a path template, as written in `router()`.
pub struct Endpoint {
    method: HttpMethod,
    path: &'static str,
    operation: OperationBuilder,
    /// Schemas this operation refers to, registered with the document.
    schemas: Vec<(String, RefOr<Schema>)>,
    /// Needs no token.
    public: bool,
    /// The statuses of its error answers.
    errors: Vec<u16>,
}

pub fn get(path: &'static str, tag: &str, summary: &str) -> Endpoint {
    Endpoint::new(HttpMethod::Get, path, tag, summary)
}

pub fn post(path: &'static str, tag: &str, summary: &str) -> Endpoint {
    Endpoint::new(HttpMethod::Post, path, tag, summary)
}

pub fn put(path: &'static str, tag: &str, summary: &str) -> Endpoint {
    Endpoint::new(HttpMethod::Put, path, tag, summary)
}

pub fn delete(path: &'static str, tag: &str, summary: &str) -> Endpoint {
    Endpoint::new(HttpMethod::Delete, path, tag, summary)
}

impl Endpoint {
    fn new(method: HttpMethod, path: &'static str, tag: &str, summary: &str) -> Endpoint {
        let operation = OperationBuilder::new().tag(tag).summary(Some(summary));
        Endpoint { method, path, operation, schemas: Vec::new(), public: false, errors: Vec::new() }
    }

    /// Anyone may call it, without a token.
    pub fn public(mut self) -> Endpoint {
        self.public = true;
        self
    }

    fn parameter(mut self, place: ParameterIn, name: &str, kind: Kind, required: bool, description: &str) -> Endpoint {
        let parameter = ParameterBuilder::new()
            .name(name)
            .parameter_in(place)
            .required(if required { Required::True } else { Required::False })
            .description(Some(description))
            .schema(Some(kind.schema()));
        self.operation = self.operation.parameter(parameter);
        self
    }

    /// A `{name}` of the path.
    pub fn path_parameter(self, name: &str, kind: Kind, description: &str) -> Endpoint {
        self.parameter(ParameterIn::Path, name, kind, true, description)
    }

    /// An optional query parameter.
    pub fn query(self, name: &str, kind: Kind, description: &str) -> Endpoint {
        self.parameter(ParameterIn::Query, name, kind, false, description)
    }

    /// A query parameter the request must carry.
    pub fn required_query(self, name: &str, kind: Kind, description: &str) -> Endpoint {
        self.parameter(ParameterIn::Query, name, kind, true, description)
    }

    /// An optional request header.
    pub fn header(self, name: &str, kind: Kind, description: &str) -> Endpoint {
        self.parameter(ParameterIn::Header, name, kind, false, description)
    }

    /// `consistency`, which every endpoint that checks its query parameters accepts.
    pub fn consistency(mut self) -> Endpoint {
        let schema =
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["linearizable", "local"])).build();
        let parameter = ParameterBuilder::new()
            .name("consistency")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "`linearizable` (the default): the node first applies everything committed before the read \
                 began; `local`: the node's own applied state at once.",
            ))
            .schema(Some(Schema::Object(schema)));
        self.operation = self.operation.parameter(parameter);
        self
    }

    /// `Idempotency-Key`, the id of the event a typed command appends.
    pub fn idempotency_key(self) -> Endpoint {
        self.header(
            "Idempotency-Key",
            Kind::Text,
            "The event's id when the body has no `id`: a retry with the same key is answered as a replay.",
        )
    }

    /// A reference to `T`'s schema, registering it and every schema it refers to.
    fn reference<T: ToSchema>(&mut self) -> RefOr<Schema> {
        let name = T::name().to_string();
        self.schemas.push((name.clone(), T::schema()));
        T::schemas(&mut self.schemas);
        RefOr::Ref(Ref::from_schema_name(name))
    }

    /// A JSON request body of shape `T`.
    pub fn body<T: ToSchema>(self, description: &str) -> Endpoint {
        self.body_as::<T>(description, &["application/json"])
    }

    /// A request body of shape `T`, sent as any of `media_types` (JSON media types all).
    pub fn body_as<T: ToSchema>(mut self, description: &str, media_types: &[&str]) -> Endpoint {
        let schema = self.reference::<T>();
        let mut body = RequestBodyBuilder::new().description(Some(description)).required(Some(Required::True));
        for media_type in media_types {
            body = body.content(*media_type, Content::new(Some(schema.clone())));
        }
        let body = body.build();
        self.operation = self.operation.request_body(Some(body));
        self
    }

    /// An answer of `status` whose body is the JSON shape `T`.
    pub fn json<T: ToSchema>(mut self, status: u16, description: &str) -> Endpoint {
        let schema = self.reference::<T>();
        let response =
            ResponseBuilder::new().description(description).content("application/json", Content::new(Some(schema)));
        self.operation = self.operation.response(status.to_string(), response.build());
        self
    }

    /// An answer of `status` whose body is text of `media_type`.
    pub fn text(mut self, status: u16, media_type: &str, description: &str) -> Endpoint {
        let schema = Schema::Object(ObjectBuilder::new().schema_type(Type::String).build());
        let response = ResponseBuilder::new().description(description).content(media_type, Content::new(Some(schema)));
        self.operation = self.operation.response(status.to_string(), response.build());
        self
    }

    /// An answer of `status` whose body is any JSON object.
    pub fn object(mut self, status: u16, description: &str) -> Endpoint {
        let schema = Schema::Object(ObjectBuilder::new().schema_type(Type::Object).build());
        let response =
            ResponseBuilder::new().description(description).content("application/json", Content::new(Some(schema)));
        self.operation = self.operation.response(status.to_string(), response.build());
        self
    }

    /// An answer of `status` whose body is text of `media_type`, with one response header:
    /// its name and what it says.
    pub fn text_with_header(
        mut self,
        status: u16,
        media_type: &str,
        description: &str,
        header: (&str, &str),
    ) -> Endpoint {
        let schema = Schema::Object(ObjectBuilder::new().schema_type(Type::String).build());
        let header_schema = Schema::Object(ObjectBuilder::new().schema_type(Type::String).build());
        let response = ResponseBuilder::new()
            .description(description)
            .content(media_type, Content::new(Some(schema)))
            .header(header.0, HeaderBuilder::new().schema(header_schema).description(Some(header.1)).build());
        self.operation = self.operation.response(status.to_string(), response.build());
        self
    }

    /// Error answers (the one error shape) for each status, besides those every endpoint that
    /// needs a token may give (401, 403, 429). Each refers to the document's one answer for its
    /// status, so the long lists of codes are written once.
    pub fn errors(mut self, statuses: &[u16]) -> Endpoint {
        let mut statuses = statuses.to_vec();
        if !self.public {
            statuses.extend([401, 403, 429]);
        }
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            let reference = Ref::from_response_name(error_name(status));
            self.operation = self.operation.response(status.to_string(), RefOr::Ref(reference));
            self.errors.push(status);
        }
        self
    }
}

/// The name of the document's error answer for `status`.
fn error_name(status: u16) -> String {
    let reason = axum::http::StatusCode::from_u16(status).ok().and_then(|status| status.canonical_reason());
    reason.unwrap_or("Error").split([' ', '-']).collect()
}

/// The error answer of `status`: the one error shape, with `Retry-After` where one is sent.
fn error_response(status: u16) -> utoipa::openapi::Response {
    let schema = RefOr::Ref(Ref::from_schema_name(ErrorBody::name()));
    let mut response = ResponseBuilder::new()
        .description(error_description(status))
        .content("application/json", Content::new(Some(schema)));
    if status == 503 || status == 429 {
        let seconds = Schema::Object(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build());
        let header = HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before retrying."));
        response = response.header("Retry-After", header.build());
    }
    response.build()
}

/// What an error status means here, with its stable codes (docs/api.md, "Conventions").
fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad request: `bad_request`, `malformed_json`, `invalid_utf8`, `invalid_parameter` (query, path, \
                `Last-Event-ID`, `Idempotency-Key`), `seq_outside_tree`, `sizes_out_of_order`, \
                `seqs_out_of_order`, `moments_out_of_order`."
        }
        401 => {
            "No usable token (when the server requires tokens): `unauthenticated`, `invalid_token`, `token_expired`."
        }
        403 => {
            "`forbidden`: the token's role may not call this endpoint, or an agent acts for a host its token \
                does not name."
        }
        404 => {
            "Not found: `seq_beyond_head`, `before_first_event`, `tree_size_beyond_head`, `stream_not_found`, \
                `host_not_found`, `deployment_not_found`, `policy_not_found`, `unknown_webhook`."
        }
        408 => "`body_timeout`: the body did not arrive within the client timeout.",
        415 => "`unsupported_media_type`: the body is not of a media type this endpoint reads.",
        409 => {
            "A conflict: the ledger's domain rules, `id_conflict`, `partial_replay`, `wrong_expected_version`, \
                `already_initialized`."
        }
        413 => "Too large: `body_too_large`, `batch_too_large`, `event_too_large`.",
        422 => {
            "Invalid content: `missing_field`, `unknown_field`, `field_not_allowed`, `invalid_field`, \
                `invalid_type`, `unknown_type`, `invalid_name`, `invalid_id`, `data_not_object`, `unsafe_number`, \
                `empty_batch`, `duplicate_id_in_batch`, `expected_version_multiple_streams`, `invalid_waves`, \
                `invalid_policy`, `invalid_calendar`, `invalid_cron`, `invalid_time_zone`, `field_mismatch`, \
                `invalid_alert`, `invalid_membership`, `reserved_type`, `reserved_for_system`, \
                `invalid_cloudevent`, `invalid_cdevent`, `unknown_cdevent_type`."
        }
        429 => "`rate_limited`, `too_many_streams_for_token`.",
        503 => {
            "Unavailable for now, with `Retry-After`: `no_leader`, `not_leader`, `write_timeout` (the outcome \
                is unknown: retry with the same ids), `unavailable`, `disk_full`, `apply_timeout`, \
                `installing_snapshot`, `no_signing_key`, `not_ready`, `too_many_subscribers`, \
                `too_many_connections`, `membership_timeout`, `leader_unreachable`, `leader_handing_over`."
        }
        _ => "An error.",
    }
}

/// The endpoints and the schemas they refer to.
pub struct Document {
    paths: Paths,
    schemas: BTreeMap<String, RefOr<Schema>>,
    /// The statuses of every error answer an endpoint gives.
    errors: BTreeSet<u16>,
    tags: Vec<(&'static str, &'static str)>,
}

impl Document {
    /// `tags`: each tag's name and description, in the order readers should see them.
    pub fn new(tags: Vec<(&'static str, &'static str)>) -> Document {
        Document { paths: Paths::new(), schemas: BTreeMap::new(), errors: BTreeSet::new(), tags }
    }

    pub fn add(&mut self, endpoint: Endpoint) {
        let mut operation = endpoint.operation;
        if !endpoint.public {
            operation = operation.security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
        }
        // axum's catch-all `{*stream}` is an ordinary path parameter in OpenAPI.
        let path = endpoint.path.replace("{*", "{");
        self.paths.add_path_operation(path, vec![endpoint.method], operation.build());
        self.schemas.extend(endpoint.schemas);
        self.errors.extend(endpoint.errors);
        if !self.errors.is_empty() {
            self.schemas.insert(ErrorBody::name().to_string(), ErrorBody::schema());
            let mut nested = Vec::new();
            ErrorBody::schemas(&mut nested);
            self.schemas.extend(nested);
        }
    }

    pub fn finish(self, description: &str) -> OpenApi {
        let info = InfoBuilder::new()
            .title("fleetlog")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(description))
            .build();
        let bearer = SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A token from the server's token file; not needed when it runs without one."))
                .build(),
        );
        let errors = self.errors.into_iter().map(|status| (error_name(status), error_response(status)));
        let components = ComponentsBuilder::new()
            .schemas_from_iter(self.schemas)
            .responses_from_iter(errors)
            .security_scheme(BEARER, bearer)
            .build();
        let tags = self
            .tags
            .into_iter()
            .map(|(name, description)| TagBuilder::new().name(name).description(Some(description)).build());
        OpenApiBuilder::new().info(info).paths(self.paths).components(Some(components)).tags(Some(tags)).build()
    }
}
