//! Hospitable webhook → unified events.
//!
//! Every Hospitable webhook (Public API v2) is the envelope `{id, action, data, created, version}`;
//! `data` has the shape of the matching GET endpoint ("object OR array of objects"). The
//! reservation webhook's `data` is `ReservationFull`: the reservation with `guest`, `financials`
//! (FinancialsV2), `properties` and `listings` included by scope. Field names follow the
//! "Hospitable API V2 Webhooks" OpenAPI document of developer.hospitable.com (see README).
//! Plain Rust: it compiles natively, so the unit tests below run without WebAssembly.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{contact, json, money, time};

use crate::conversation;

/// The inbound actions this plugin understands, in Hospitable's spelling. `reservation.changed`
/// is the documented update action; `reservation.updated` is the spelling of a third-party SDK's
/// docs and is read the same way.
pub const EVENTS: &[&str] = &["reservation.created", "reservation.changed", "reservation.updated", "message.created"];

/// `reservation_status.current.category` → unified status. `not accepted` depends on its
/// sub-category (see [`status`]).
const CATEGORIES: Vocabulary = &[
    ("accepted", ReservationStatus::Confirmed),
    ("request", ReservationStatus::Pending),
    ("cancelled", ReservationStatus::Cancelled),
    ("unknown", ReservationStatus::Unknown),
];

/// The deprecated flat `status` (example "booking"), read only when `reservation_status` is
/// absent. Words from Hospitable's help article on reservation webhooks (Pending, Accepted,
/// Booking, Staying, Waiting for payment, Cancelled).
const LEGACY_STATUSES: Vocabulary = &[
    ("accepted", ReservationStatus::Confirmed),
    ("booking", ReservationStatus::Confirmed),
    ("staying", ReservationStatus::Confirmed),
    ("pending", ReservationStatus::Pending),
    ("waiting for payment", ReservationStatus::Pending),
    ("cancelled", ReservationStatus::Cancelled),
];

/// One webhook → the unified events it means (or the API calls needed first).
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let action = json::string(&body, "action").ok_or_else(|| PluginError::BadPayload("no `action` field".into()))?;
    match action.as_str() {
        "reservation.created" | "reservation.changed" | "reservation.updated" => {
            let created_at = json::timestamp(&body, "created");
            let events = items(&body, &action)?
                .into_iter()
                .map(|item| {
                    let mut reservation = reservation(item)?;
                    // Hospitable's reservation has no "updated at": the webhook's `created` (when
                    // the payload was made, i.e. when the change was seen) stands for it.
                    reservation.updated_at = created_at.clone();
                    Ok(if action == "reservation.created" {
                        Event::ReservationCreated(reservation)
                    } else {
                        Event::ReservationUpdated(reservation)
                    })
                })
                .collect::<Result<Vec<_>, PluginError>>()?;
            Ok(Outcome::Done(events))
        }
        "message.created" => conversation::normalize(&body, responses),
        other => Err(PluginError::UnsupportedEvent(other.to_string())),
    }
}

/// The objects in `data`: one object, or each object of an array.
pub fn items<'a>(body: &'a Value, action: &str) -> Result<Vec<&'a Value>, PluginError> {
    match body.get("data") {
        Some(Value::Object(_)) => Ok(vec![&body["data"]]),
        Some(Value::Array(list)) if list.iter().all(Value::is_object) => Ok(list.iter().collect()),
        _ => Err(PluginError::BadPayload(format!("{action}: `data` is not an object or a list of objects"))),
    }
}

/// The unified status of a Hospitable reservation.
pub fn status(reservation: &Value) -> ReservationStatus {
    let Some(current) = json::path(reservation, &["reservation_status", "current"]) else {
        return json::string(reservation, "status")
            .map(|word| status::lookup(LEGACY_STATUSES, &word))
            .unwrap_or(ReservationStatus::Unknown);
    };
    let category = json::string(current, "category").unwrap_or_default().to_ascii_lowercase();
    let sub_category = json::string(current, "sub_category").unwrap_or_default().to_ascii_lowercase();
    match category.as_str() {
        // "not accepted": declined by the host, withdrawn by the guest, or expired.
        "not accepted" => match sub_category.as_str() {
            "expired" => ReservationStatus::Expired,
            "withdrawn" => ReservationStatus::Cancelled,
            _ => ReservationStatus::Declined,
        },
        other => status::lookup(CATEGORIES, other),
    }
}

/// When a cancelled reservation was cancelled: the latest `changed_at` of a `cancelled` entry in
/// `reservation_status.history` (else in the deprecated `status_history`).
pub fn cancelled_at(reservation: &Value) -> Option<String> {
    let history = json::path(reservation, &["reservation_status", "history"])
        .and_then(Value::as_array)
        .filter(|entries| !entries.is_empty())
        .map(Vec::as_slice)
        .unwrap_or_else(|| json::array(reservation, "status_history"));
    history
        .iter()
        .filter(|entry| json::string(entry, "category").is_some_and(|category| category.eq_ignore_ascii_case("cancelled")))
        .filter_map(|entry| json::timestamp(entry, "changed_at"))
        .max_by(|a, b| a.cmp(b))
}

/// "2019-01-03T13:00:00-05:00" → "2019-01-03T13:00:00": the property's local time, unshifted.
pub fn local_time(text: &str) -> Option<String> {
    let local = text.get(..19)?;
    (time::is_timestamp(text) && time::is_timestamp(local) && local.as_bytes()[10] == b'T').then(|| local.to_string())
}

/// Hospitable money (`{amount, formatted}`, `amount` in cents: 12345 is "$123.45") → major units.
pub fn amount(value: &Value) -> Option<f64> {
    json::number(value, "amount").map(|cents| money::cents(cents / 100.0))
}

/// Tax line label → unified tax type.
pub fn tax_kind(label: &str) -> &'static str {
    let label = label.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|word| label.contains(word));
    if has(&["vat", "gst"]) {
        "VAT_GST"
    } else if has(&["city", "touris"]) {
        "CITY_TOURISM_TAX"
    } else if has(&["lodging"]) {
        "LODGING_TAX"
    } else if has(&["occupancy"]) {
        "TRANSIENT_OCCUPANCY_TAX"
    } else if has(&["hotel"]) {
        "HOTEL_TAX"
    } else if has(&["sales"]) {
        "SALES_TAX"
    } else if has(&["room"]) {
        "ROOM_TAX"
    } else {
        "OTHER_TAX"
    }
}

/// Fee line label → unified fee type.
pub fn fee_kind(label: &str) -> &'static str {
    if label.to_ascii_lowercase().contains("clean") { "CLEANING_FEE" } else { "OTHER_FEE" }
}

fn charge(item: &Value, kind: &str) -> Charge {
    Charge {
        name: json::string(item, "label"),
        description: json::string(item, "category"),
        kind: kind.to_string(),
        units: None,
        total: amount(item),
        is_mandatory: None,
    }
}

/// A group of lines from a list of Hospitable money items; an empty list totals 0 (Hospitable
/// listed every line), an absent one stays unknown.
fn group(list: Option<&Value>, kind: impl Fn(&str) -> &'static str) -> ChargeGroup {
    let Some(items) = list.and_then(Value::as_array) else { return ChargeGroup::empty() };
    let breakdown: Vec<Charge> = items.iter().map(|item| charge(item, kind(&json::string(item, "label").unwrap_or_default()))).collect();
    let total = money::cents(breakdown.iter().filter_map(|line| line.total).sum());
    ChargeGroup { total: Some(total), breakdown }
}

/// `financials` (FinancialsV2) → unified finances, from the guest side (what the guest pays).
pub fn finances(financials: Option<&Value>) -> Finances {
    let Some(financials) = financials.filter(|value| value.is_object()) else {
        return Finances { payment_status: Some("Unknown".into()), ..Finances::unknown() };
    };
    let guest = financials.get("guest").cloned().unwrap_or(Value::Null);
    let base_price = match guest.get("accommodation").filter(|value| value.is_object()) {
        Some(accommodation) => {
            let line = charge(accommodation, "BASE_PRICE");
            ChargeGroup { total: line.total, breakdown: vec![line] }
        }
        None => ChargeGroup::empty(),
    };
    Finances {
        total_price: guest.get("total_price").and_then(amount),
        currency: json::string(financials, "currency").and_then(|code| money::currency(&code)),
        remaining_balance: None,
        payment_status: Some("Unknown".into()),
        base_price,
        fee: group(guest.get("fees"), fee_kind),
        tax: group(guest.get("taxes"), tax_kind),
        discount: group(guest.get("discounts"), |_| "DISCOUNT"),
    }
}

/// The included `guest` → the unified guest; `None` when Hospitable sent no guest.
pub fn guest(value: Option<&Value>) -> Option<GuestInfo> {
    let guest = value.filter(|value| value.is_object())?;
    let first = json::string(guest, "first_name");
    let last = json::string(guest, "last_name");
    let name = [first.clone(), last.clone()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let phones: Vec<String> = json::array(guest, "phone_numbers").iter().filter_map(json::text).collect();
    Some(GuestInfo {
        name: (!name.is_empty()).then_some(name),
        name_first: first,
        name_last: last,
        emails: contact::emails(json::string(guest, "email").as_deref()),
        mobile_numbers: contact::phones(phones.iter().map(String::as_str)),
        preferred_language: None,
        address: None,
        pictures: json::string(guest, "profile_picture").into_iter().collect(),
    })
}

/// A Hospitable reservation (`ReservationFull`) → the unified reservation.
pub fn reservation(data: &Value) -> Result<Reservation, PluginError> {
    let id = json::string(data, "id").ok_or_else(|| PluginError::BadPayload("reservation has no `id`".into()))?;
    let date_of = |key: &str| json::string(data, key).as_deref().and_then(time::date_part).map(str::to_string);
    let guests = data.get("guests").cloned().unwrap_or(Value::Null);
    let status = status(data);
    let finances = finances(data.get("financials"));
    let mut reservation = Reservation::new(id);
    reservation.created_at = json::timestamp(data, "booking_date");
    reservation.cancelled_at = if status == ReservationStatus::Cancelled { cancelled_at(data) } else { None };
    reservation.arrival_date = date_of("arrival_date");
    reservation.departure_date = date_of("departure_date");
    reservation.nights = json::count(data, "nights");
    reservation.property_id = json::array(data, "properties").first().and_then(|property| json::string(property, "id"));
    reservation.number_of_guests = json::count(&guests, "total");
    reservation.number_of_adults = json::count(&guests, "adult_count");
    reservation.number_of_children = json::count(&guests, "child_count");
    reservation.number_of_infants = json::count(&guests, "infant_count");
    reservation.number_of_pets = json::count(&guests, "pet_count");
    reservation.primary_guest = guest(data.get("guest"));
    reservation.source = json::string(data, "platform");
    reservation.status = status;
    reservation.arrival_estimated_time = json::string(data, "check_in").as_deref().and_then(local_time);
    reservation.departure_estimated_time = json::string(data, "check_out").as_deref().and_then(local_time);
    reservation.codes.confirmation_code = json::string(data, "platform_id");
    reservation.total_price = finances.total_price;
    reservation.currency = finances.currency.clone();
    reservation.finances = finances;
    Ok(reservation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(body: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&body)
    }

    fn with_status(category: &str, sub_category: Value) -> Value {
        json!({"reservation_status": {"current": {"category": category, "sub_category": sub_category}, "history": []}})
    }

    #[test]
    fn status_categories_and_sub_categories() {
        for (category, sub_category, unified) in [
            ("accepted", json!(null), ReservationStatus::Confirmed),
            ("request", json!("request to book"), ReservationStatus::Pending),
            ("request", json!("pending verification"), ReservationStatus::Pending),
            ("cancelled", json!(null), ReservationStatus::Cancelled),
            ("not accepted", json!("declined"), ReservationStatus::Declined),
            ("not accepted", json!("withdrawn"), ReservationStatus::Cancelled),
            ("not accepted", json!("expired"), ReservationStatus::Expired),
            ("not accepted", json!(null), ReservationStatus::Declined),
            ("unknown", json!(null), ReservationStatus::Unknown),
            ("checkpoint", json!(null), ReservationStatus::Unknown),
        ] {
            assert_eq!(status(&with_status(category, sub_category.clone())), unified, "{category} / {sub_category}");
        }
    }

    #[test]
    fn deprecated_status_is_the_fallback() {
        assert_eq!(status(&json!({"status": "booking"})), ReservationStatus::Confirmed);
        assert_eq!(status(&json!({"status": "Waiting for payment"})), ReservationStatus::Pending);
        assert_eq!(status(&json!({"status": "cancelled"})), ReservationStatus::Cancelled);
        assert_eq!(status(&json!({})), ReservationStatus::Unknown);
        // The structured status wins over the deprecated word.
        let both = json!({"status": "booking", "reservation_status": {"current": {"category": "cancelled", "sub_category": null}}});
        assert_eq!(status(&both), ReservationStatus::Cancelled);
    }

    #[test]
    fn cancellation_time_comes_from_the_history() {
        let value = json!({"reservation_status": {"current": {"category": "cancelled"}, "history": [
            {"category": "accepted", "sub_category": null, "changed_at": "2019-01-01T12:00:00-05:00"},
            {"category": "cancelled", "sub_category": null, "changed_at": "2019-01-02T08:30:00-05:00"}
        ]}});
        assert_eq!(cancelled_at(&value).as_deref(), Some("2019-01-02T08:30:00-05:00"));
        let legacy =
            json!({"status_history": [{"category": "cancelled", "sub_category": null, "changed_at": "2019-01-02T09:00:00-05:00"}]});
        assert_eq!(cancelled_at(&legacy).as_deref(), Some("2019-01-02T09:00:00-05:00"));
        assert_eq!(cancelled_at(&json!({})), None);
    }

    #[test]
    fn check_in_times_stay_local() {
        assert_eq!(local_time("2019-01-03T13:00:00-05:00").as_deref(), Some("2019-01-03T13:00:00"));
        assert_eq!(local_time("2019-01-03T13:00:00Z").as_deref(), Some("2019-01-03T13:00:00"));
        assert_eq!(local_time("2019-01-03"), None);
        assert_eq!(local_time("soon"), None);
    }

    #[test]
    fn money_is_in_cents_and_lines_are_typed() {
        assert_eq!(amount(&json!({"amount": 12345, "formatted": "$123.45"})), Some(123.45));
        assert_eq!(amount(&json!({"amount": -12345})), Some(-123.45));
        assert_eq!(tax_kind("Lodging taxes"), "LODGING_TAX");
        assert_eq!(tax_kind("City taxes"), "CITY_TOURISM_TAX");
        assert_eq!(tax_kind("VAT"), "VAT_GST");
        assert_eq!(tax_kind("Pass-through taxes"), "OTHER_TAX");
        assert_eq!(fee_kind("Cleaning Fee"), "CLEANING_FEE");
        assert_eq!(fee_kind("Guest Service Fee"), "OTHER_FEE");
        let finances =
            finances(Some(&json!({"currency": "usd", "guest": {"fees": [], "taxes": [{"amount": 1000, "label": "City taxes"}]}})));
        assert_eq!(finances.currency.as_deref(), Some("USD"));
        assert_eq!(finances.fee.total, Some(0.0));
        assert_eq!(finances.tax.total, Some(10.0));
        assert_eq!(finances.tax.breakdown[0].kind, "CITY_TOURISM_TAX");
        assert_eq!(finances.base_price.total, None);
        assert_eq!(finances.discount.total, None);
    }

    #[test]
    fn a_change_is_an_update_and_a_list_gives_one_event_each() {
        let body = json!({"id": "01GTKD6ZYFVQMR0RWP4HBBHNZC", "action": "reservation.changed", "created": "2023-10-01T09:35:24Z", "version": "1.0",
            "data": [{"id": "r1", "reservation_status": {"current": {"category": "cancelled", "sub_category": null}, "history": []}}, {"id": "r2"}]});
        let Outcome::Done(events) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected done") };
        let [Event::ReservationUpdated(first), Event::ReservationUpdated(second)] = events.as_slice() else { panic!("got {events:?}") };
        assert_eq!(first.status, ReservationStatus::Cancelled);
        assert_eq!(first.updated_at.as_deref(), Some("2023-10-01T09:35:24Z"));
        assert_eq!(second.id, "r2");
    }

    #[test]
    fn a_guest_without_contact_details() {
        let guest = guest(Some(&json!({"first_name": "Anonymous", "last_name": null, "email": null, "phone_numbers": null}))).unwrap();
        assert_eq!(guest.name.as_deref(), Some("Anonymous"));
        assert!(guest.emails.is_empty() && guest.mobile_numbers.is_empty());
        assert!(super::guest(Some(&json!(null))).is_none());
    }

    #[test]
    fn bad_and_unsupported_bodies_are_named() {
        let error = normalize(&inbound(json!({"action": "reservation.created"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("data")));
        let error = normalize(&inbound(json!({"action": "reservation.created", "data": {"platform": "airbnb"}})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("id")));
        let error = normalize(&inbound(json!({"data": {}})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("action")));
        let error = normalize(&inbound(json!([1, 2])), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(_)));
        for action in ["review.created", "property.changed", "property.merged", "integration.disconnected"] {
            let error = normalize(&inbound(json!({"action": action, "data": {"id": "x"}})), &[]).unwrap_err();
            assert!(matches!(error, PluginError::UnsupportedEvent(event) if event == action));
        }
    }
}
