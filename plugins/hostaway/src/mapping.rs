//! Hostaway's unified webhook → unified events, in plain Rust (compiled natively for tests and
//! benchmarks, and into the component by `lib.rs`).
//!
//! Entry point: [`normalize`]. Every per-field function below reads one part of Hostaway's
//! reservation object (`data` of the webhook) and is `pub` so it can be tested on its own. The field
//! table, with the sources, is in `plugins/hostaway/README.md`.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{json, language, time};

/// The account setting that pins the Hostaway account a listener belongs to.
pub const ACCOUNT_ID_SETTING: &str = "hostawayAccountId";

/// Unified-webhook event names this plugin knows (Hostaway's spelling).
pub const EVENTS: &[&str] = &["reservation.created", "reservation.updated", "message.received"];

/// Turn one Hostaway unified-webhook delivery into unified events.
///
/// The body is `{"object", "event", "accountId", "data": {...}}` or the nested variant
/// `{"object", "event", "accountId", "payload": {"data": {...}}}`. A dashboard test delivery
/// (`"data": "test"`) yields no events. Reservation webhooks carry the whole reservation, so they
/// make no API call; `message.received` fetches the conversation (`crate::conversation`).
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let data = envelope_data(&body);
    if is_ping(data) {
        return Ok(Outcome::Done(Vec::new()));
    }
    check_account(&body, &inbound.account.settings)?;
    let event = json::string(&body, "event").ok_or_else(|| PluginError::BadPayload("missing `event` in the webhook body".into()))?;
    match event.as_str() {
        "reservation.created" | "reservation.updated" => {
            let data = data
                .filter(|data| data.is_object())
                .ok_or_else(|| PluginError::BadPayload(format!("{event}: `data` is missing or not an object")))?;
            let reservation = reservation(data)?;
            let event = if event == "reservation.created" {
                Event::ReservationCreated(reservation)
            } else {
                Event::ReservationUpdated(reservation)
            };
            Ok(Outcome::Done(vec![event]))
        }
        "message.received" => {
            let data = data
                .filter(|data| data.is_object())
                .ok_or_else(|| PluginError::BadPayload("message.received: `data` is missing or not an object".into()))?;
            crate::conversation::message_received(data, responses)
        }
        other => Err(PluginError::UnsupportedEvent(other.to_string())),
    }
}

/// The `data` of the envelope: top-level `data`, else `payload.data`.
pub fn envelope_data(body: &Value) -> Option<&Value> {
    match body.get("data") {
        Some(data) if !data.is_null() => Some(data),
        _ => body.get("payload").and_then(|payload| payload.get("data")).filter(|data| !data.is_null()),
    }
}

/// Hostaway's dashboard test delivery: `data` is the string `"test"`.
pub fn is_ping(data: Option<&Value>) -> bool {
    matches!(data, Some(Value::String(text)) if text.trim() == "test")
}

/// Refuse a body whose `accountId` differs from the account's `hostawayAccountId` setting. Without
/// the setting, or without `accountId` in the body, there is nothing to compare.
pub fn check_account(body: &Value, settings: &[(String, String)]) -> Result<(), PluginError> {
    let Some((_, expected)) = settings.iter().find(|(name, _)| name == ACCOUNT_ID_SETTING) else {
        return Ok(());
    };
    let expected = expected.trim();
    match json::string(body, "accountId") {
        Some(actual) if !expected.is_empty() && actual != expected => {
            Err(PluginError::BadPayload(format!("accountId {actual} does not match the account's {ACCOUNT_ID_SETTING} {expected}")))
        }
        _ => Ok(()),
    }
}

/// One Hostaway reservation object as a unified reservation.
pub fn reservation(data: &Value) -> Result<Reservation, PluginError> {
    let id = json::string(data, "id")
        .or_else(|| json::string(data, "hostawayReservationId"))
        .ok_or_else(|| PluginError::BadPayload("reservation `id` is missing".into()))?;
    let dates_known = json::flag(data, "isDatesUnspecified") != Some(true);
    let arrival_date = dates_known.then(|| date(data, "arrivalDate")).flatten();
    let departure_date = dates_known.then(|| date(data, "departureDate")).flatten();
    let nights = if dates_known {
        json::count(data, "nights").or_else(|| match (&arrival_date, &departure_date) {
            (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
            _ => None,
        })
    } else {
        None
    };
    let total_price = json::number(data, "totalPrice");
    let currency = json::string(data, "currency");
    Ok(Reservation {
        id,
        created_at: local_timestamp(data, "insertedOn").or_else(|| local_timestamp(data, "reservationDate")),
        updated_at: local_timestamp(data, "updatedOn"),
        cancelled_at: local_timestamp(data, "cancellationDate"),
        arrival_estimated_time: estimated_time(arrival_date.as_deref(), data, "checkInTime"),
        departure_estimated_time: estimated_time(departure_date.as_deref(), data, "checkOutTime"),
        arrival_date,
        departure_date,
        nights,
        property_id: json::string(data, "listingMapId"),
        number_of_guests: json::count(data, "numberOfGuests"),
        primary_guest: primary_guest(data),
        number_of_adults: json::count(data, "adults"),
        number_of_children: json::count(data, "children"),
        number_of_infants: json::count(data, "infants"),
        number_of_pets: json::count(data, "pets"),
        source: source(data),
        total_price,
        currency: currency.clone(),
        status: status(json::string(data, "status").as_deref()),
        codes: codes(data),
        notes: notes(data),
        verification: verification(data),
        finances: finances(data, total_price, currency),
        custom_fields: custom_fields(data),
    })
}

/// A "YYYY-MM-DD" field, if it holds a real date.
pub fn date(data: &Value, key: &str) -> Option<String> {
    let text = json::string(data, key)?;
    time::parse_date(&text).map(|_| text)
}

/// A date or a local date-time field ("YYYY-MM-DD" or "YYYY-MM-DD HH:MM:SS"), passed through as
/// Hostaway wrote it (the account's local time; the host renders it with `Z`, unshifted). Anything
/// else (for instance "0000-00-00 00:00:00") is `None`, so the host never refuses the output.
pub fn local_timestamp(data: &Value, key: &str) -> Option<String> {
    let text = json::string(data, key)?;
    is_local_timestamp(&text).then_some(text)
}

/// Whether `text` is "YYYY-MM-DD" or "YYYY-MM-DD[ T]HH:MM[:SS[.fff]]" with a real date and time.
pub fn is_local_timestamp(text: &str) -> bool {
    let Some(date) = time::date_part(text) else {
        return false;
    };
    let rest = &text[date.len()..];
    if rest.is_empty() {
        return true;
    }
    let Some(clock) = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T')) else {
        return false;
    };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    if !fraction.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let parts: Vec<&str> = clock.split(':').collect();
    let limits = [24u32, 60, 60];
    if !(2..=3).contains(&parts.len()) || (parts.len() == 2 && !fraction.is_empty()) {
        return false;
    }
    parts
        .iter()
        .zip(limits)
        .all(|(part, limit)| part.len() == 2 && part.chars().all(|c| c.is_ascii_digit()) && part.parse::<u32>().is_ok_and(|n| n < limit))
}

/// The stay's date at Hostaway's check-in or check-out hour (`checkInTime`/`checkOutTime`, an
/// hour 0..23), as a local "YYYY-MM-DDTHH:00:00".
pub fn estimated_time(date: Option<&str>, data: &Value, hour_key: &str) -> Option<String> {
    time::date_at_hour(date?, json::count(data, hour_key)?)
}

/// The guest: `guestName`, `guestFirstName`, `guestLastName`, `guestEmail`, `phone`, `guestLocale`,
/// `guestAddress`/`guestZipCode`/`guestCity`/`guestCountry` and `guestPicture`. `None` when
/// Hostaway gives none of them.
pub fn primary_guest(data: &Value) -> Option<GuestInfo> {
    let name_first = json::string(data, "guestFirstName");
    let name_last = json::string(data, "guestLastName");
    let name = json::string(data, "guestName").or_else(|| {
        let joined = [name_first.as_deref(), name_last.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        (!joined.is_empty()).then_some(joined)
    });
    let line1 = json::string(data, "guestAddress");
    let postal_code = json::string(data, "guestZipCode");
    let city = json::string(data, "guestCity");
    let country = json::string(data, "guestCountry");
    let address = (line1.is_some() || postal_code.is_some() || city.is_some() || country.is_some()).then_some(PostalAddress {
        line1,
        postal_code,
        city,
        country,
    });
    let guest = GuestInfo {
        name,
        name_first,
        name_last,
        emails: json::string(data, "guestEmail").into_iter().collect(),
        mobile_numbers: json::string(data, "phone").into_iter().collect(),
        preferred_language: json::string(data, "guestLocale").and_then(|code| language::from_code(&code)),
        address,
        pictures: json::string(data, "guestPicture").into_iter().collect(),
    };
    let empty = guest.name.is_none()
        && guest.emails.is_empty()
        && guest.mobile_numbers.is_empty()
        && guest.preferred_language.is_none()
        && guest.address.is_none()
        && guest.pictures.is_empty();
    (!empty).then_some(guest)
}

/// Hostaway's channels (`channelId`, `channelName`) → the unified `source`. The table of
/// <https://api.hostaway.com/documentation#reservation-channels>; Vrbo is HomeAway, as the seed
/// writes it.
const CHANNELS: &[(u32, &str, &str)] = &[
    (2000, "direct", "DIRECT"),
    (2002, "homeaway", "HOMEAWAY"),
    (2005, "bookingcom", "BOOKING_COM"),
    (2007, "expedia", "EXPEDIA"),
    (2009, "homeawayical", "HOMEAWAY"),
    (2010, "vrboical", "HOMEAWAY"),
    (2013, "bookingengine", "BOOKING_ENGINE"),
    (2015, "customical", "CUSTOM_ICAL"),
    (2016, "tripadvisorical", "TRIPADVISOR"),
    (2017, "wordpress", "WORDPRESS"),
    (2018, "airbnbofficial", "AIRBNB"),
    (2019, "marriott", "MARRIOTT"),
    (2020, "partner", "PARTNER"),
    (2021, "gds", "GDS"),
    (2022, "google", "GOOGLE"),
];

/// Channel names seen outside the channel table (older docs and display names).
const CHANNEL_ALIASES: &[(&str, &str)] =
    &[("airbnb", "AIRBNB"), ("vrbo", "HOMEAWAY"), ("booking.com", "BOOKING_COM"), ("booking", "BOOKING_COM")];

/// The unified source of a reservation: by `channelId` from Hostaway's channel table, else by
/// `channelName`; an unknown name is written in upper snake case ("someChannel" → "SOME_CHANNEL").
/// Hostaway's own `source` field (the integration that created the booking, e.g. "homeawayApi")
/// is not the channel and is not used.
pub fn source(data: &Value) -> Option<String> {
    if let Some(id) = json::count(data, "channelId")
        && let Some((_, _, source)) = CHANNELS.iter().find(|(known, _, _)| *known == id)
    {
        return Some((*source).to_string());
    }
    let name = json::string(data, "channelName")?;
    let lower = name.to_ascii_lowercase();
    CHANNELS
        .iter()
        .find(|(_, known, _)| *known == lower)
        .map(|(_, _, source)| *source)
        .or_else(|| CHANNEL_ALIASES.iter().find(|(known, _)| *known == lower).map(|(_, source)| *source))
        .map(str::to_string)
        .or_else(|| Some(upper_snake(&name)).filter(|text| !text.is_empty()))
}

/// "airbnbOfficial" → "AIRBNB_OFFICIAL", "Booking.com" → "BOOKING_COM".
pub fn upper_snake(text: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && previous_lower && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            previous_lower = false;
        }
    }
    out.trim_end_matches('_').to_string()
}

/// Hostaway's reservation status → the unified status (table in the README).
pub fn status(status: Option<&str>) -> ReservationStatus {
    let Some(status) = status else {
        return ReservationStatus::Unknown;
    };
    match status.to_ascii_lowercase().as_str() {
        "new" | "modified" | "confirmed" => ReservationStatus::Confirmed,
        "cancelled" | "canceled" => ReservationStatus::Cancelled,
        "ownerstay" => ReservationStatus::OwnerStay,
        "pending" | "awaitingpayment" | "awaitingguestverification" | "unconfirmed" => ReservationStatus::Pending,
        "inquiry" | "inquirypreapproved" => ReservationStatus::Inquiry,
        "declined" | "inquirydenied" | "inquirynotpossible" => ReservationStatus::Declined,
        "expired" | "inquirytimedout" => ReservationStatus::Expired,
        _ => ReservationStatus::Unknown,
    }
}

/// `doorCode` → access code; `confirmationCode` (the channel's confirmation code, "HMP2KQ4B44")
/// → confirmation code. `channelReservationId` is the channel's internal reservation id, not a
/// code shown to the guest, and is not used.
pub fn codes(data: &Value) -> ReservationCodes {
    ReservationCodes {
        access_code: json::string(data, "doorCode").into_iter().collect(),
        confirmation_code: json::string(data, "confirmationCode"),
    }
}

/// The guest's words: `guestNote`, then `comment`, joined by a blank line when both are there.
/// `hostNote` is the host's internal note and is not a guest note.
pub fn notes(data: &Value) -> Option<String> {
    let parts: Vec<String> = ["guestNote", "comment"].iter().filter_map(|key| json::string(data, key)).collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// `isGuestIdentityVerified`, `isGuestVerifiedByEmail`, `isGuestVerifiedByPhone`,
/// `isGuestVerifiedByGovernmentId` (0/1; deprecated by Hostaway but still sent).
pub fn verification(data: &Value) -> GuestVerification {
    GuestVerification {
        is_identity_verified: json::flag(data, "isGuestIdentityVerified"),
        is_email_verified: json::flag(data, "isGuestVerifiedByEmail"),
        is_phone_verified: json::flag(data, "isGuestVerifiedByPhone"),
        is_government_id_verified: json::flag(data, "isGuestVerifiedByGovernmentId"),
    }
}

/// The price groups of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    BasePrice,
    Fee,
    Tax,
    Discount,
}

/// Which group and unified `type` a Hostaway finance field belongs to, from its `type` (price, fee,
/// tax, discount) and its `name` (baseRate, cleaningFeeValue, cityTax, ...). `None` for a type
/// Hostaway may add later that is none of those, when the name does not tell either.
pub fn classify(kind: Option<&str>, name: &str) -> Option<(Group, &'static str)> {
    let lower = name.to_ascii_lowercase();
    let group = match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("price") => Group::BasePrice,
        Some("fee") => Group::Fee,
        Some("tax") => Group::Tax,
        Some("discount") => Group::Discount,
        _ if lower == "baserate" => Group::BasePrice,
        _ if lower.ends_with("discount") => Group::Discount,
        _ if lower.ends_with("tax") || lower.ends_with("taxes") || lower == "vat" => Group::Tax,
        _ if lower.ends_with("fee") || lower.ends_with("fees") => Group::Fee,
        _ => return None,
    };
    let unified = match group {
        Group::BasePrice => "BASE_PRICE",
        Group::Discount => "DISCOUNT",
        Group::Fee if lower.contains("cleaning") => "CLEANING_FEE",
        Group::Fee => "OTHER_FEE",
        Group::Tax => match lower.as_str() {
            "vat" => "VAT_GST",
            "citytax" => "CITY_TOURISM_TAX",
            "hoteltax" => "HOTEL_TAX",
            "lodgingtax" => "LODGING_TAX",
            "roomtax" => "ROOM_TAX",
            "salestax" => "SALES_TAX",
            "transientoccupancytax" => "TRANSIENT_OCCUPANCY_TAX",
            "propertyrenttax" => "RENT_TAX",
            _ => "OTHER_TAX",
        },
    };
    Some((group, unified))
}

/// One `financeField` element as a charge, with its group; `None` for deleted lines
/// (`isDeleted` = 1), lines outside the total (`isIncludedInTotalPrice` = 0) and lines of an
/// unknown kind.
pub fn finance_charge(field: &Value) -> Option<(Group, Charge)> {
    if json::flag(field, "isDeleted") == Some(true) || json::flag(field, "isIncludedInTotalPrice") == Some(false) {
        return None;
    }
    let name = json::string(field, "name").unwrap_or_default();
    let (group, kind) = classify(json::string(field, "type").as_deref(), &name)?;
    let title = json::string(field, "title");
    let label = json::string(field, "alias").or_else(|| title.clone()).or_else(|| Some(name.clone()).filter(|n| !n.is_empty()));
    let charge = Charge {
        description: title.or_else(|| label.clone()),
        name: label,
        kind: kind.to_string(),
        units: json::count(field, "units"),
        total: json::number(field, "total"),
        is_mandatory: json::flag(field, "isMandatory"),
    };
    Some((group, charge))
}

/// The money side. From the `financeField` array when Hostaway includes it (each line grouped by
/// its `type`, empty groups then total 0); otherwise from the flat `cleaningFee` and `taxAmount`
/// fields, and groups Hostaway says nothing about stay unknown (no total, no lines).
pub fn finances(data: &Value, total_price: Option<f64>, currency: Option<String>) -> Finances {
    let mut finances = Finances::unknown();
    finances.total_price = total_price;
    finances.currency = currency;
    finances.remaining_balance = json::number(data, "remainingBalance");
    finances.payment_status = payment_status(data);
    let lines: Vec<(Group, Charge)> = json::array(data, "financeField").iter().filter_map(finance_charge).collect();
    if !lines.is_empty() {
        for (group, charge) in lines {
            group_of(&mut finances, group).breakdown.push(charge);
        }
        for group in [Group::BasePrice, Group::Fee, Group::Tax, Group::Discount] {
            let group = group_of(&mut finances, group);
            group.total = Some(round_cents(group.breakdown.iter().filter_map(|charge| charge.total).sum()));
        }
        return finances;
    }
    if let Some(cleaning) = json::number(data, "cleaningFee") {
        finances.fee = single(flat_charge("Cleaning fee", "CLEANING_FEE", cleaning));
    }
    if let Some(tax) = json::number(data, "taxAmount") {
        finances.tax = single(flat_charge("Tax", "OTHER_TAX", tax));
    }
    finances
}

fn group_of(finances: &mut Finances, group: Group) -> &mut ChargeGroup {
    match group {
        Group::BasePrice => &mut finances.base_price,
        Group::Fee => &mut finances.fee,
        Group::Tax => &mut finances.tax,
        Group::Discount => &mut finances.discount,
    }
}

fn flat_charge(name: &str, kind: &str, total: f64) -> Charge {
    Charge {
        name: Some(name.into()),
        description: Some(name.into()),
        kind: kind.into(),
        units: None,
        total: Some(total),
        is_mandatory: None,
    }
}

fn single(charge: Charge) -> ChargeGroup {
    ChargeGroup { total: charge.total, breakdown: vec![charge] }
}

/// Sums of cents in binary floating point: 0.1 + 0.2 is written 0.3.
fn round_cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// `paymentStatus` as Hostaway writes it ("Paid"); else `isPaid` 1 → "Paid", 0 → "Unpaid"; else
/// "Unknown", as the seed writes it.
pub fn payment_status(data: &Value) -> Option<String> {
    let status = json::string(data, "paymentStatus").unwrap_or_else(|| match json::flag(data, "isPaid") {
        Some(true) => "Paid".into(),
        Some(false) => "Unpaid".into(),
        None => "Unknown".into(),
    });
    Some(status)
}

/// `customFieldValues`: `{customFieldId, value}`, with the field's definition in `customField`
/// (`{id, name, type, ...}`) when Hostaway embeds it. Without a definition the name is empty and
/// the type "unknown" (Hostaway's dashboard defines them; `GET /v1/customFields` lists them).
pub fn custom_fields(data: &Value) -> Vec<CustomField> {
    json::array(data, "customFieldValues")
        .iter()
        .filter_map(|item| {
            let definition = item.get("customField").filter(|definition| definition.is_object());
            let id = json::string(item, "customFieldId").or_else(|| definition.and_then(|d| json::string(d, "id")))?;
            Some(CustomField {
                id,
                name: definition.and_then(|d| json::string(d, "name")).unwrap_or_default(),
                kind: definition.and_then(|d| json::string(d, "type")).unwrap_or_else(|| "unknown".into()),
                value: json::string(item, "value"),
                default_value: definition.and_then(|d| json::string(d, "defaultValue")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_cover_hostaways_list() {
        assert_eq!(status(Some("new")), ReservationStatus::Confirmed);
        assert_eq!(status(Some("modified")), ReservationStatus::Confirmed);
        assert_eq!(status(Some("cancelled")), ReservationStatus::Cancelled);
        assert_eq!(status(Some("ownerStay")), ReservationStatus::OwnerStay);
        assert_eq!(status(Some("awaitingPayment")), ReservationStatus::Pending);
        assert_eq!(status(Some("inquiryPreapproved")), ReservationStatus::Inquiry);
        assert_eq!(status(Some("inquiryDenied")), ReservationStatus::Declined);
        assert_eq!(status(Some("inquiryNotPossible")), ReservationStatus::Declined);
        assert_eq!(status(Some("inquiryTimedout")), ReservationStatus::Expired);
        assert_eq!(status(Some("somethingNew")), ReservationStatus::Unknown);
        assert_eq!(status(None), ReservationStatus::Unknown);
    }

    #[test]
    fn sources_by_channel_id_then_name() {
        assert_eq!(source(&json!({"channelId": 2002, "channelName": "homeaway"})).as_deref(), Some("HOMEAWAY"));
        assert_eq!(source(&json!({"channelId": 2010})).as_deref(), Some("HOMEAWAY"));
        assert_eq!(source(&json!({"channelId": 2018, "channelName": "airbnbOfficial"})).as_deref(), Some("AIRBNB"));
        assert_eq!(source(&json!({"channelId": 2001, "channelName": "airbnb"})).as_deref(), Some("AIRBNB"));
        assert_eq!(source(&json!({"channelId": 2005})).as_deref(), Some("BOOKING_COM"));
        assert_eq!(source(&json!({"channelId": 2999, "channelName": "someNewChannel"})).as_deref(), Some("SOME_NEW_CHANNEL"));
        assert_eq!(source(&json!({})), None);
        assert_eq!(upper_snake("Booking.com"), "BOOKING_COM");
    }

    #[test]
    fn local_timestamps_are_checked() {
        assert!(is_local_timestamp("2017-06-10 10:41:10"));
        assert!(is_local_timestamp("2017-06-10"));
        assert!(is_local_timestamp("2017-06-10T10:41"));
        assert!(!is_local_timestamp("0000-00-00 00:00:00"));
        assert!(!is_local_timestamp("2017-06-10 24:00:00"));
        assert!(!is_local_timestamp("2017-06-10 10:41:10+02"));
        assert!(!is_local_timestamp("2017-06-10 10"));
    }

    #[test]
    fn finance_fields_are_grouped_and_typed() {
        let data = json!({"financeField": [
            {"type": "price", "name": "baseRate", "title": "Base rate", "units": 1, "total": 1055, "isIncludedInTotalPrice": 1, "isDeleted": 0},
            {"type": "fee", "name": "cleaningFeeValue", "title": "Cleaning fee", "units": 1, "total": 40.32, "isIncludedInTotalPrice": 1, "isDeleted": 0},
            {"type": "tax", "name": "cityTax", "title": "City / Tourism tax", "total": 11, "isIncludedInTotalPrice": 1, "isDeleted": 0},
            {"type": "tax", "name": "vat", "title": "VAT / GST", "total": 20, "isIncludedInTotalPrice": 1, "isDeleted": 0},
            {"type": "price", "name": "baseRate", "title": "Base rate", "total": 0, "isIncludedInTotalPrice": 1, "isDeleted": 1},
            {"type": "fee", "name": "hostChannelFee", "title": "Host channel fee", "total": 99, "isIncludedInTotalPrice": 0, "isDeleted": 0}
        ]});
        let finances = finances(&data, Some(1126.32), Some("USD".into()));
        assert_eq!(finances.base_price.total, Some(1055.0));
        assert_eq!(finances.base_price.breakdown.len(), 1);
        assert_eq!(finances.fee.total, Some(40.32));
        assert_eq!(finances.fee.breakdown[0].kind, "CLEANING_FEE");
        assert_eq!(finances.tax.total, Some(31.0));
        assert_eq!(finances.tax.breakdown[0].kind, "CITY_TOURISM_TAX");
        assert_eq!(finances.tax.breakdown[1].kind, "VAT_GST");
        assert_eq!(finances.discount.total, Some(0.0));
        assert_eq!(finances.payment_status.as_deref(), Some("Unknown"));
    }

    #[test]
    fn flat_fields_without_finance_fields() {
        let data = json!({"cleaningFee": 126.5, "taxAmount": 115.64, "isPaid": 1});
        let finances = finances(&data, None, None);
        assert_eq!(finances.fee.total, Some(126.5));
        assert_eq!(finances.fee.breakdown[0].kind, "CLEANING_FEE");
        assert_eq!(finances.tax.breakdown[0].kind, "OTHER_TAX");
        assert_eq!(finances.base_price.total, None);
        assert_eq!(finances.payment_status.as_deref(), Some("Paid"));
    }

    #[test]
    fn unspecified_dates_are_not_mapped() {
        let data = json!({"id": 1, "arrivalDate": "2024-01-01", "departureDate": "2024-01-02",
            "isDatesUnspecified": 1, "nights": 1, "checkInTime": 15});
        let reservation = reservation(&data).unwrap();
        assert_eq!(reservation.arrival_date, None);
        assert_eq!(reservation.nights, None);
        assert_eq!(reservation.arrival_estimated_time, None);
    }

    #[test]
    fn nights_fall_back_to_the_dates() {
        let data = json!({"id": 1, "arrivalDate": "2024-02-28", "departureDate": "2024-03-02"});
        assert_eq!(reservation(&data).unwrap().nights, Some(3));
    }

    #[test]
    fn guest_absent_when_nothing_known() {
        assert!(primary_guest(&json!({"guestName": null, "guestEmail": ""})).is_none());
        let guest = primary_guest(&json!({"guestFirstName": "Ana", "guestLastName": "Lopez"})).unwrap();
        assert_eq!(guest.name.as_deref(), Some("Ana Lopez"));
        assert!(guest.address.is_none());
    }
}
