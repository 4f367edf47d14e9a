//! Guesty's reservation object → the unified reservation.
//!
//! The object is the one Guesty's legacy webhooks carry in `reservation` and that
//! `GET /v1/reservations/{id}` answers. The field table, with sources, is in the crate README.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{json, language, time};

use stayhook_plugin_sdk::json::path;

/// The reservation's id: `_id`, else `id`.
pub fn id(object: &Value) -> Option<String> {
    json::string(object, "_id").or_else(|| json::string(object, "id"))
}

/// The listing (unified property) the reservation is for: `listingId`, else `listing._id`.
pub fn listing_id(object: &Value) -> Option<String> {
    json::string(object, "listingId").or_else(|| object.get("listing").and_then(|listing| json::string(listing, "_id")))
}

/// The stay's local dates (`checkInDateLocalized`, `checkOutDateLocalized`).
pub fn stay_dates(object: &Value) -> Option<(String, String)> {
    Some((json::date(object, "checkInDateLocalized")?, json::date(object, "checkOutDateLocalized")?))
}

/// One Guesty reservation object as a unified reservation.
pub fn reservation(object: &Value) -> Result<Reservation, PluginError> {
    let id = id(object).ok_or_else(|| PluginError::BadPayload("reservation `_id` is missing".into()))?;
    let arrival_date = json::date(object, "checkInDateLocalized");
    let departure_date = json::date(object, "checkOutDateLocalized");
    let nights = json::count(object, "nightsCount").or_else(|| match (&arrival_date, &departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    });
    let money = object.get("money").filter(|money| money.is_object());
    let currency = money.and_then(|money| json::string(money, "currency"));
    let total_price = money.and_then(total_price);
    let counts = object.get("numberOfGuests").filter(|counts| counts.is_object());
    let count = |key: &str| counts.and_then(|counts| json::count(counts, key));
    Ok(Reservation {
        id,
        created_at: json::timestamp(object, "createdAt"),
        updated_at: json::timestamp(object, "lastUpdatedAt").or_else(|| json::timestamp(object, "updatedAt")),
        cancelled_at: json::timestamp(object, "canceledAt").or_else(|| json::timestamp(object, "cancelledAt")),
        arrival_estimated_time: estimated_time(object, arrival_date.as_deref(), "plannedArrival", "checkIn"),
        departure_estimated_time: estimated_time(object, departure_date.as_deref(), "plannedDeparture", "checkOut"),
        arrival_date,
        departure_date,
        nights,
        property_id: listing_id(object),
        number_of_guests: json::count(object, "guestsCount"),
        primary_guest: object.get("guest").filter(|guest| guest.is_object()).and_then(primary_guest),
        number_of_adults: count("numberOfAdults"),
        number_of_children: count("numberOfChildren"),
        number_of_infants: count("numberOfInfants"),
        number_of_pets: count("numberOfPets"),
        source: json::string(object, "source").or_else(|| path(object, &["integration", "platform"]).and_then(json::text)),
        total_price,
        currency: currency.clone(),
        status: status(json::string(object, "status").as_deref()),
        codes: ReservationCodes { access_code: Vec::new(), confirmation_code: json::string(object, "confirmationCode") },
        notes: None,
        verification: GuestVerification::unknown(),
        finances: finances(money, total_price, currency),
        custom_fields: custom_fields(object),
    })
}

/// Guesty's reservation status → the unified status (table in the README).
pub fn status(status: Option<&str>) -> ReservationStatus {
    let Some(status) = status else { return ReservationStatus::Unknown };
    match status.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "confirmed" | "reserved" | "checked_in" | "checked_out" => ReservationStatus::Confirmed,
        "inquiry" => ReservationStatus::Inquiry,
        "awaiting_payment" | "pending" => ReservationStatus::Pending,
        "canceled" | "cancelled" => ReservationStatus::Cancelled,
        "declined" | "closed" => ReservationStatus::Declined,
        "expired" => ReservationStatus::Expired,
        _ => ReservationStatus::Unknown,
    }
}

/// Expected arrival/departure: the local date at Guesty's `plannedArrival`/`plannedDeparture`
/// ("HH:MM", local, kept unshifted); else the `checkIn`/`checkOut` instant Guesty computes from the
/// listing's default times (rendered in UTC).
pub fn estimated_time(object: &Value, date: Option<&str>, planned_key: &str, instant_key: &str) -> Option<String> {
    if let (Some(date), Some(planned)) = (date, json::string(object, planned_key)) {
        let local = format!("{date}T{planned}");
        if time::is_timestamp(&local) {
            return Some(local);
        }
    }
    json::timestamp(object, instant_key)
}

/// The guest: `fullName`, `firstName`, `lastName`, `email`/`emails`, `phone`/`phones`,
/// `preferredLanguage`, `hometown`/`address`, `picture`. `None` when none of them is known.
pub fn primary_guest(guest: &Value) -> Option<GuestInfo> {
    let name_first = json::string(guest, "firstName");
    let name_last = json::string(guest, "lastName");
    let name = json::string(guest, "fullName").or_else(|| {
        let joined = [name_first.as_deref(), name_last.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        (!joined.is_empty()).then_some(joined)
    });
    let emails = listed(guest, "email", "emails");
    let mobile_numbers = listed(guest, "phone", "phones");
    let address = guest.get("address").filter(|address| address.is_object()).and_then(|address| {
        let line1 = json::string(address, "street").or_else(|| json::string(address, "full"));
        let postal_code = json::string(address, "zipcode").or_else(|| json::string(address, "zipCode"));
        let city = json::string(address, "city");
        let country = json::string(address, "country");
        (line1.is_some() || postal_code.is_some() || city.is_some() || country.is_some()).then_some(PostalAddress {
            line1,
            postal_code,
            city,
            country,
        })
    });
    let pictures: Vec<String> =
        json::string(guest, "picture").or_else(|| path(guest, &["picture", "thumbnail"]).and_then(json::text)).into_iter().collect();
    let info = GuestInfo {
        name,
        name_first,
        name_last,
        emails,
        mobile_numbers,
        preferred_language: json::string(guest, "preferredLanguage").and_then(|code| language::from_code(&code)),
        address,
        pictures,
    };
    let empty = info.name.is_none()
        && info.emails.is_empty()
        && info.mobile_numbers.is_empty()
        && info.preferred_language.is_none()
        && info.address.is_none()
        && info.pictures.is_empty();
    (!empty).then_some(info)
}

/// The single field first, then the list field's other entries, without repeats.
fn listed(value: &Value, single: &str, list: &str) -> Vec<String> {
    let mut out: Vec<String> = json::string(value, single).into_iter().collect();
    for item in json::array(value, list).iter().filter_map(json::text) {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The price of the stay: `money.subTotalPrice`, else `money.hostPayout` (see the README: Guesty's
/// docs do not define a guest total).
pub fn total_price(money: &Value) -> Option<f64> {
    json::number(money, "subTotalPrice").or_else(|| json::number(money, "hostPayout"))
}

/// The price groups of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    BasePrice,
    Fee,
    Tax,
    Discount,
}

/// Which group and unified `type` an invoice item belongs to, from `normalType` (AF, CF, ...),
/// `type` and `title`.
pub fn classify(item: &Value) -> (Group, &'static str) {
    let normal = json::string(item, "normalType").unwrap_or_default().to_ascii_uppercase();
    let kind = json::string(item, "type").unwrap_or_default().to_ascii_uppercase();
    let title = json::string(item, "title").unwrap_or_default().to_ascii_lowercase();
    let negative = json::number(item, "amount").is_some_and(|amount| amount < 0.0);
    if normal == "AF" || kind.contains("ACCOMMODATION") || title.contains("accommodation") {
        (Group::BasePrice, "BASE_PRICE")
    } else if normal == "CF" || kind.contains("CLEANING") || title.contains("cleaning") {
        (Group::Fee, "CLEANING_FEE")
    } else if kind.contains("TAX") || normal.starts_with("TAX") || title.contains("tax") || title.contains("vat") {
        let tax = if title.contains("vat") || title.contains("gst") {
            "VAT_GST"
        } else if title.contains("city") || title.contains("tourism") || title.contains("tourist") {
            "CITY_TOURISM_TAX"
        } else if title.contains("occupancy") {
            "TRANSIENT_OCCUPANCY_TAX"
        } else {
            "OTHER_TAX"
        };
        (Group::Tax, tax)
    } else if kind.contains("DISCOUNT") || title.contains("discount") || negative {
        (Group::Discount, "DISCOUNT")
    } else {
        (Group::Fee, "OTHER_FEE")
    }
}

/// The money side: `money.invoiceItems` grouped when Guesty sends them; otherwise the flat
/// `fareAccommodation`, `fareCleaning` and `totalTaxes`. Groups Guesty says nothing about stay unknown.
pub fn finances(money: Option<&Value>, total_price: Option<f64>, currency: Option<String>) -> Finances {
    let mut finances = Finances::unknown();
    finances.total_price = total_price;
    finances.currency = currency;
    let Some(money) = money else {
        finances.payment_status = Some("Unknown".into());
        return finances;
    };
    finances.remaining_balance = json::number(money, "balanceDue");
    finances.payment_status = Some(payment_status(money));
    let items = json::array(money, "invoiceItems");
    if !items.is_empty() {
        for item in items {
            let (group, kind) = classify(item);
            let title = json::string(item, "title");
            group_of(&mut finances, group).breakdown.push(Charge {
                name: title.clone(),
                description: title,
                kind: kind.into(),
                units: None,
                total: json::number(item, "amount"),
                is_mandatory: None,
            });
        }
        for group in [Group::BasePrice, Group::Fee, Group::Tax, Group::Discount] {
            let group = group_of(&mut finances, group);
            group.total = Some(round_cents(group.breakdown.iter().filter_map(|charge| charge.total).sum()));
        }
        return finances;
    }
    if let Some(fare) = json::number(money, "fareAccommodation") {
        finances.base_price = single("Accommodation fare", "BASE_PRICE", fare);
    }
    if let Some(cleaning) = json::number(money, "fareCleaning") {
        finances.fee = single("Cleaning fee", "CLEANING_FEE", cleaning);
    }
    if let Some(taxes) = json::number(money, "totalTaxes") {
        finances.tax = single("Taxes", "OTHER_TAX", taxes);
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

fn single(name: &str, kind: &str, total: f64) -> ChargeGroup {
    ChargeGroup {
        total: Some(total),
        breakdown: vec![Charge {
            name: Some(name.into()),
            description: Some(name.into()),
            kind: kind.into(),
            units: None,
            total: Some(total),
            is_mandatory: None,
        }],
    }
}

fn round_cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// `isFullyPaid` true → "Paid"; otherwise from `totalPaid` and `balanceDue`: something paid and
/// nothing due → "Paid", something paid → "Partially paid", nothing paid → "Unpaid"; "Unknown" (the
/// seed's word) when Guesty says none of it.
pub fn payment_status(money: &Value) -> String {
    let paid = json::number(money, "totalPaid");
    let due = json::number(money, "balanceDue");
    match (json::flag(money, "isFullyPaid"), paid, due) {
        (Some(true), _, _) => "Paid".into(),
        (None, Some(paid), Some(due)) if paid > 0.0 && due <= 0.0 => "Paid".into(),
        (_, Some(paid), _) if paid > 0.0 => "Partially paid".into(),
        (Some(false), _, _) | (None, Some(_), _) => "Unpaid".into(),
        (None, None, _) => "Unknown".into(),
    }
}

/// `customFields`: `{fieldId, value}`. Guesty does not embed the field's definition, so the name is
/// empty and the type "unknown".
pub fn custom_fields(object: &Value) -> Vec<CustomField> {
    json::array(object, "customFields")
        .iter()
        .filter_map(|field| {
            Some(CustomField {
                id: json::string(field, "fieldId").or_else(|| json::string(field, "_id"))?,
                name: json::string(field, "name").unwrap_or_default(),
                kind: json::string(field, "type").unwrap_or_else(|| "unknown".into()),
                value: field.get("value").and_then(json::text),
                default_value: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses() {
        assert_eq!(status(Some("confirmed")), ReservationStatus::Confirmed);
        assert_eq!(status(Some("reserved")), ReservationStatus::Confirmed);
        assert_eq!(status(Some("checked_in")), ReservationStatus::Confirmed);
        assert_eq!(status(Some("inquiry")), ReservationStatus::Inquiry);
        assert_eq!(status(Some("awaiting_payment")), ReservationStatus::Pending);
        assert_eq!(status(Some("canceled")), ReservationStatus::Cancelled);
        assert_eq!(status(Some("declined")), ReservationStatus::Declined);
        assert_eq!(status(Some("closed")), ReservationStatus::Declined);
        assert_eq!(status(Some("expired")), ReservationStatus::Expired);
        assert_eq!(status(Some("new-thing")), ReservationStatus::Unknown);
        assert_eq!(status(None), ReservationStatus::Unknown);
    }

    #[test]
    fn invoice_items_are_grouped() {
        let money = json!({"currency": "EUR", "isFullyPaid": false, "totalPaid": 100, "balanceDue": 371.5, "invoiceItems": [
            {"title": "Accommodation fare", "amount": 400, "normalType": "AF"},
            {"title": "Cleaning fee", "amount": 35, "normalType": "CF"},
            {"title": "City tax", "amount": 12.25, "type": "TAX"},
            {"title": "VAT", "amount": 24.25, "type": "TAX"},
            {"title": "Early bird", "amount": -0.1},
            {"title": "Pet fee", "amount": 20}
        ]});
        let finances = finances(Some(&money), Some(471.5), Some("EUR".into()));
        assert_eq!(finances.base_price.total, Some(400.0));
        assert_eq!(finances.fee.total, Some(55.0));
        assert_eq!(finances.fee.breakdown[0].kind, "CLEANING_FEE");
        assert_eq!(finances.fee.breakdown[1].kind, "OTHER_FEE");
        assert_eq!(finances.tax.total, Some(36.5));
        assert_eq!(finances.tax.breakdown[0].kind, "CITY_TOURISM_TAX");
        assert_eq!(finances.tax.breakdown[1].kind, "VAT_GST");
        assert_eq!(finances.discount.total, Some(-0.1));
        assert_eq!(finances.payment_status.as_deref(), Some("Partially paid"));
        assert_eq!(finances.remaining_balance, Some(371.5));
    }

    #[test]
    fn guest_and_counts_and_planned_times() {
        let object = json!({"_id": "r1", "checkInDateLocalized": "2024-05-01", "checkOutDateLocalized": "2024-05-04",
            "plannedArrival": "16:00", "checkOut": "2024-05-04T08:00:00.000Z",
            "numberOfGuests": {"numberOfAdults": 2, "numberOfChildren": 1, "numberOfInfants": 0, "numberOfPets": 1},
            "guest": {"firstName": "Ana", "lastName": "Lopez", "email": "ana@example.com", "emails": ["ana@example.com", "a2@example.com"],
                      "phones": ["+34600000000"], "preferredLanguage": "es"},
            "customFields": [{"fieldId": "f1", "value": 7}]});
        let r = reservation(&object).unwrap();
        assert_eq!(r.nights, Some(3));
        assert_eq!(r.arrival_estimated_time.as_deref(), Some("2024-05-01T16:00"));
        assert_eq!(r.departure_estimated_time.as_deref(), Some("2024-05-04T08:00:00.000Z"));
        assert_eq!((r.number_of_adults, r.number_of_children, r.number_of_infants, r.number_of_pets), (Some(2), Some(1), Some(0), Some(1)));
        let guest = r.primary_guest.unwrap();
        assert_eq!(guest.name.as_deref(), Some("Ana Lopez"));
        assert_eq!(guest.emails, vec!["ana@example.com".to_string(), "a2@example.com".to_string()]);
        assert_eq!(guest.mobile_numbers, vec!["+34600000000".to_string()]);
        assert_eq!(guest.preferred_language.unwrap().name.as_deref(), Some("SPANISH"));
        assert_eq!(r.custom_fields[0].id, "f1");
        assert_eq!(r.custom_fields[0].value.as_deref(), Some("7"));
        assert_eq!(r.finances.payment_status.as_deref(), Some("Unknown"));
        assert_eq!(payment_status(&json!({"totalPaid": 50, "balanceDue": 0})), "Paid");
        assert_eq!(payment_status(&json!({"totalPaid": 0, "balanceDue": 10})), "Unpaid");
        assert_eq!(payment_status(&json!({"isFullyPaid": true})), "Paid");
    }
}
