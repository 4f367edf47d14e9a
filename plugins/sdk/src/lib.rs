//! Guest-side kit for stayhook plugins.
//!
//! It generates the bindings of the contract in `wit/v0.2` once, so a plugin crate depends on this
//! crate instead of running `wit_bindgen::generate!` itself, and it holds the helpers every mapping
//! needs (reading loosely typed JSON, dates, money, language names). Everything here also compiles
//! natively: mapping code is unit tested and benchmarked without WebAssembly. A plugin implements
//! [`Guest`] and calls [`export_plugin!`].

/// The bindings generated from `wit/v0.2`. Plugins normally use [`model`], [`Guest`] and
/// [`export_plugin!`] instead.
#[allow(clippy::too_many_arguments)] // generated code: one argument per WIT record field
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "stayhook_plugin_sdk::bindings",
    });
}

/// The unified model and the boundary types of the contract.
pub use bindings::stayhook::plugin::types as model;
pub use bindings::{Guest, export_plugin};

pub mod api;
pub mod contact;
pub mod json;
pub mod language;
pub mod money;
pub mod status;
pub mod testing;
pub mod time;

/// Every plugin's allocator inside WebAssembly: talc, not Rust's default dlmalloc (see
/// BENCHMARKS.md for what it saves per call). A plugin's instance lives across calls, so its heap
/// is reused, never returned.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// The contract version these bindings were generated from.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// The `sync` of a plugin whose PMS has no usable listing endpoint (the default of [`plugin!`]):
/// refuses as unsupported, and the plugin declares no `sync_modes`.
pub fn no_sync(_request: &model::SyncRequest, _responses: &[model::ApiResponse]) -> Result<model::SyncOutcome, model::PluginError> {
    Err(model::PluginError::UnsupportedEvent("this plugin has no sync: its PMS offers no listing it can reconcile from".into()))
}

/// The `subscribe` of a plugin whose PMS has no webhook API: asks the operator to paste the
/// listener URL into the PMS (a default of [`plugin!`]).
pub fn manual_subscribe(request: &model::RegistrationRequest) -> Result<model::RegistrationStep, model::PluginError> {
    Ok(model::RegistrationStep::Manual(format!("Add a webhook in the PMS's settings with the URL {}.", request.listener_url)))
}

/// The webhook's body as a JSON object, or the `bad-payload` refusal every plugin gives: "body is
/// not JSON: <parser's message>" or "body is not a JSON object".
pub fn json_object_body(inbound: &model::Inbound) -> Result<serde_json::Value, model::PluginError> {
    let body: serde_json::Value =
        serde_json::from_slice(&inbound.body).map_err(|error| model::PluginError::BadPayload(format!("body is not JSON: {error}")))?;
    if !body.is_object() {
        return Err(model::PluginError::BadPayload("body is not a JSON object".into()));
    }
    Ok(body)
}

/// A JSON webhook for a mapping's unit tests; [`testing`] holds it with the other test helpers.
pub use testing::json_inbound;

/// Write a line to the daemon's log. Natively (unit tests, benches) it writes to standard error.
pub fn log(level: model::LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::stayhook::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

impl model::ChargeGroup {
    /// A group with no total and no lines.
    pub fn empty() -> Self {
        Self { total: None, breakdown: Vec::new() }
    }
}

impl model::Finances {
    /// Finances where nothing is known.
    pub fn unknown() -> Self {
        Self {
            total_price: None,
            currency: None,
            remaining_balance: None,
            payment_status: None,
            base_price: model::ChargeGroup::empty(),
            fee: model::ChargeGroup::empty(),
            tax: model::ChargeGroup::empty(),
            discount: model::ChargeGroup::empty(),
        }
    }
}

impl model::Reservation {
    /// A reservation where only the id is known (status unknown, every other field empty): the
    /// start of every mapping, which then fills what the PMS says.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            created_at: None,
            updated_at: None,
            cancelled_at: None,
            arrival_date: None,
            departure_date: None,
            nights: None,
            property_id: None,
            number_of_guests: None,
            primary_guest: None,
            number_of_adults: None,
            number_of_children: None,
            number_of_infants: None,
            number_of_pets: None,
            source: None,
            total_price: None,
            currency: None,
            status: model::ReservationStatus::Unknown,
            arrival_estimated_time: None,
            departure_estimated_time: None,
            codes: model::ReservationCodes { access_code: Vec::new(), confirmation_code: None },
            notes: None,
            verification: model::GuestVerification::unknown(),
            finances: model::Finances::unknown(),
            custom_fields: Vec::new(),
        }
    }
}

impl model::GuestInfo {
    /// A guest with only a name (the other fields empty).
    pub fn named(name: Option<String>) -> Self {
        Self {
            name,
            name_first: None,
            name_last: None,
            emails: Vec::new(),
            mobile_numbers: Vec::new(),
            preferred_language: None,
            address: None,
            pictures: Vec::new(),
        }
    }
}

impl model::GuestVerification {
    /// Verification where the PMS says nothing.
    pub fn unknown() -> Self {
        Self { is_identity_verified: None, is_email_verified: None, is_phone_verified: None, is_government_id_verified: None }
    }
}

/// Export a plugin written as plain functions, the way the official plugins are:
///
/// ```ignore
/// stayhook_plugin_sdk::plugin! {
///     describe: plugin_info,                  // fn() -> PluginInfo
///     normalize: mapping::normalize,          // fn(&Inbound, &[ApiResponse]) -> Result<Outcome, PluginError>
///     subscribe: registration::subscribe,     // optional: fn(&RegistrationRequest) -> Result<RegistrationStep, PluginError>
///     sync: listing::sync,                    // optional: fn(&SyncRequest, &[ApiResponse]) -> Result<SyncOutcome, PluginError>
/// }
/// ```
///
/// A plugin implements only what its PMS has: without `subscribe` registration is manual
/// ([`manual_subscribe`]), without `sync` reconciliation is not available ([`no_sync`]; declare no
/// `sync_modes` then). The functions stay ordinary Rust, callable natively from unit tests and
/// benchmarks; the macro adds only the component glue.
#[macro_export]
macro_rules! plugin {
    (describe: $describe:path, normalize: $normalize:path $(,)?) => {
        $crate::plugin! { describe: $describe, normalize: $normalize, subscribe: $crate::manual_subscribe, sync: $crate::no_sync }
    };
    (describe: $describe:path, normalize: $normalize:path, subscribe: $subscribe:path $(,)?) => {
        $crate::plugin! { describe: $describe, normalize: $normalize, subscribe: $subscribe, sync: $crate::no_sync }
    };
    (describe: $describe:path, normalize: $normalize:path, sync: $sync:path $(,)?) => {
        $crate::plugin! { describe: $describe, normalize: $normalize, subscribe: $crate::manual_subscribe, sync: $sync }
    };
    (describe: $describe:path, normalize: $normalize:path, subscribe: $subscribe:path, sync: $sync:path $(,)?) => {
        struct StayhookPlugin;

        impl $crate::Guest for StayhookPlugin {
            fn describe() -> $crate::model::PluginInfo {
                $describe()
            }

            fn normalize(
                inbound: $crate::model::Inbound,
                responses: ::std::vec::Vec<$crate::model::ApiResponse>,
            ) -> ::std::result::Result<$crate::model::Outcome, $crate::model::PluginError> {
                $normalize(&inbound, &responses)
            }

            fn subscribe(
                request: $crate::model::RegistrationRequest,
            ) -> ::std::result::Result<$crate::model::RegistrationStep, $crate::model::PluginError> {
                $subscribe(&request)
            }

            fn sync(
                request: $crate::model::SyncRequest,
                responses: ::std::vec::Vec<$crate::model::ApiResponse>,
            ) -> ::std::result::Result<$crate::model::SyncOutcome, $crate::model::PluginError> {
                $sync(&request, &responses)
            }
        }

        $crate::export_plugin!(StayhookPlugin);
    };
}
