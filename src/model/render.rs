//! From the plugin's typed records to the seed's JSON, validating as it goes.
//!
//! Everything a plugin returns is untrusted: a timestamp in no accepted form, an empty id, a price
//! that is not a number, or too much output makes the whole plugin output invalid, and the event
//! fails with the reason. Nothing is repaired silently.

use serde_json::{Map, Number, Value, json};

use super::time;
use super::{EventResult, EventType, RecordKind};
use crate::plugin::bindings::stayhook::plugin::types as wit;

/// Longest id accepted from a plugin, in bytes.
const ID_MAX_BYTES: usize = 512;

/// Why a plugin's output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin output: {0}")]
pub struct InvalidOutput(pub String);

/// What the plugin said about a reservation's novelty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Statement {
    /// The PMS says it is new.
    Created,
    /// The PMS says it changed.
    Updated,
    /// The PMS does not say: decided from stored state.
    Upserted,
    /// Not a reservation upsert (deleted, conversation, calendar, incomplete).
    NotApplicable,
}

/// One plugin event, validated and rendered, before state decides what is delivered. Serialized
/// only as a listed page waiting in the inbox (`store::ListedPage`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalized {
    /// The event type as far as the plugin knows it (state may turn created into updated).
    pub event_type: EventType,
    /// What the plugin said about novelty.
    pub statement: Statement,
    /// The record's id (for a calendar, the property id, and the room type id after a `/`).
    pub record_id: String,
    /// The rendered record, the seed's `data.record`.
    pub record: Map<String, Value>,
    /// SUCCESS, or FAILURE for an incomplete record.
    pub result: EventResult,
    /// Why the record is incomplete.
    pub failure_reason: Option<String>,
}

impl Normalized {
    /// The kind of record, for state keys.
    pub fn record_kind(&self) -> RecordKind {
        self.event_type.record_kind()
    }
}

/// Validate and render one plugin event.
pub fn render_event(event: &wit::Event) -> Result<Normalized, InvalidOutput> {
    let (event_type, statement, record) = match event {
        wit::Event::ReservationCreated(reservation) => {
            (EventType::ReservationCreated, Statement::Created, reservation_record(reservation)?)
        }
        wit::Event::ReservationUpdated(reservation) => {
            (EventType::ReservationUpdated, Statement::Updated, reservation_record(reservation)?)
        }
        wit::Event::ReservationUpserted(reservation) => {
            (EventType::ReservationCreated, Statement::Upserted, reservation_record(reservation)?)
        }
        wit::Event::ReservationDeleted(id) => {
            (EventType::ReservationDeleted, Statement::NotApplicable, id_only(id, "reservation-deleted")?)
        }
        wit::Event::ConversationUpdated(conversation) => {
            (EventType::ConversationUpdated, Statement::NotApplicable, conversation_record(conversation)?)
        }
        wit::Event::CalendarUpdated(calendar) => (EventType::CalendarUpdated, Statement::NotApplicable, calendar_record(calendar)?),
        wit::Event::Incomplete(incomplete) => {
            let record = id_only(&incomplete.record_id, "incomplete.record-id")?;
            let record_id = incomplete.record_id.clone();
            return Ok(Normalized {
                event_type: event_type_of(incomplete.event_type),
                statement: Statement::NotApplicable,
                record_id,
                record,
                result: EventResult::Failure,
                failure_reason: Some(incomplete.reason.clone()),
            });
        }
    };
    let record_id = match record.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => unreachable_id(),
    };
    Ok(Normalized { event_type, statement, record_id, record, result: EventResult::Success, failure_reason: None })
}

/// Every renderer above puts a string `id` first; reaching this is a bug in this file.
fn unreachable_id() -> String {
    tracing::error!("rendered record without a string id");
    String::new()
}

fn event_type_of(event_type: wit::EventType) -> EventType {
    match event_type {
        wit::EventType::ReservationCreated => EventType::ReservationCreated,
        wit::EventType::ReservationUpdated => EventType::ReservationUpdated,
        wit::EventType::ReservationDeleted => EventType::ReservationDeleted,
        wit::EventType::ConversationUpdated => EventType::ConversationUpdated,
        wit::EventType::CalendarUpdated => EventType::CalendarUpdated,
    }
}

fn id_only(id: &str, field: &str) -> Result<Map<String, Value>, InvalidOutput> {
    let mut record = Map::new();
    record.insert("id".into(), Value::String(checked_id(id, field)?));
    Ok(record)
}

fn checked_id(id: &str, field: &str) -> Result<String, InvalidOutput> {
    let id = id.trim();
    if id.is_empty() {
        return Err(InvalidOutput(format!("{field} is empty")));
    }
    if id.len() > ID_MAX_BYTES || id.contains('\0') {
        return Err(InvalidOutput(format!("{field} is longer than {ID_MAX_BYTES} bytes or holds a NUL")));
    }
    Ok(id.to_string())
}

fn timestamp(value: &Option<String>, field: &str) -> Result<Value, InvalidOutput> {
    match value {
        None => Ok(Value::Null),
        Some(text) => time::render(text).map(Value::String).ok_or_else(|| InvalidOutput(format!("{field} {text:?} is not a timestamp"))),
    }
}

/// Like [`timestamp`], but absent renders as `""`, as the seed writes `cancelledAt`.
fn timestamp_or_empty(value: &Option<String>, field: &str) -> Result<Value, InvalidOutput> {
    match timestamp(value, field)? {
        Value::Null => Ok(Value::String(String::new())),
        rendered => Ok(rendered),
    }
}

/// Money: whole amounts as integers (the seed writes `7233`), others as decimals.
fn money(value: Option<f64>, field: &str) -> Result<Value, InvalidOutput> {
    let Some(amount) = value else { return Ok(Value::Null) };
    if !amount.is_finite() {
        return Err(InvalidOutput(format!("{field} is not a finite number")));
    }
    if amount.fract() == 0.0 && amount.abs() < 9.0e15 {
        return Ok(Value::Number(Number::from(amount as i64)));
    }
    Ok(Number::from_f64(amount).map(Value::Number).unwrap_or(Value::Null))
}

fn optional_text(value: &Option<String>) -> Value {
    value.as_ref().map_or(Value::Null, |text| Value::String(text.clone()))
}

fn count(value: Option<u32>) -> Value {
    value.map_or(Value::Null, |n| Value::Number(n.into()))
}

fn flag(value: Option<bool>) -> Value {
    value.map_or(Value::Null, Value::Bool)
}

fn strings(values: &[String]) -> Value {
    Value::Array(values.iter().map(|value| Value::String(value.clone())).collect())
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn status_name(status: wit::ReservationStatus) -> &'static str {
    match status {
        wit::ReservationStatus::Confirmed => "CONFIRMED",
        wit::ReservationStatus::Pending => "PENDING",
        wit::ReservationStatus::Inquiry => "INQUIRY",
        wit::ReservationStatus::Cancelled => "CANCELLED",
        wit::ReservationStatus::Declined => "DECLINED",
        wit::ReservationStatus::Expired => "EXPIRED",
        wit::ReservationStatus::OwnerStay => "OWNER_STAY",
        wit::ReservationStatus::Unknown => "UNKNOWN",
    }
}

fn reservation_record(reservation: &wit::Reservation) -> Result<Map<String, Value>, InvalidOutput> {
    let id = checked_id(&reservation.id, "reservation.id")?;
    let arrival_date = timestamp(&reservation.arrival_date, "reservation.arrival-date")?;
    let departure_date = timestamp(&reservation.departure_date, "reservation.departure-date")?;
    let nights = match reservation.nights {
        Some(nights) => Value::Number(nights.into()),
        None => nights_between(&arrival_date, &departure_date),
    };
    let record = json!({
        "id": id,
        "createdAt": timestamp(&reservation.created_at, "reservation.created-at")?,
        "updatedAt": timestamp(&reservation.updated_at, "reservation.updated-at")?,
        "cancelledAt": timestamp_or_empty(&reservation.cancelled_at, "reservation.cancelled-at")?,
        "arrivalDate": arrival_date,
        "departureDate": departure_date,
        "previousArrivalDate": "",
        "previousDepartureDate": "",
        "nights": nights,
        "propertyId": optional_text(&reservation.property_id),
        "numberOfGuests": count(reservation.number_of_guests),
        "primaryGuest": guest(reservation.primary_guest.as_ref()),
        "numberOfAdults": count(reservation.number_of_adults),
        "numberOfChildren": count(reservation.number_of_children),
        "numberOfInfants": count(reservation.number_of_infants),
        "numberOfPets": count(reservation.number_of_pets),
        "source": optional_text(&reservation.source),
        "totalPrice": money(reservation.total_price, "reservation.total-price")?,
        "currency": optional_text(&reservation.currency),
        "status": status_name(reservation.status),
        "arrivalEstimatedTime": timestamp(&reservation.arrival_estimated_time, "reservation.arrival-estimated-time")?,
        "departureEstimatedTime": timestamp(&reservation.departure_estimated_time, "reservation.departure-estimated-time")?,
        "codes": {
            "accessCode": strings(&reservation.codes.access_code),
            "confirmationCode": optional_text(&reservation.codes.confirmation_code),
        },
        "notes": optional_text(&reservation.notes),
        "verification": {
            "isIdentityVerified": flag(reservation.verification.is_identity_verified),
            "isEmailVerified": flag(reservation.verification.is_email_verified),
            "isPhoneVerified": flag(reservation.verification.is_phone_verified),
            "isGovernmentIdVerified": flag(reservation.verification.is_government_id_verified),
        },
        "finances": finances(&reservation.finances)?,
        "customFields": reservation.custom_fields.iter().map(custom_field).collect::<Result<Vec<_>, _>>()?,
    });
    Ok(into_map(record))
}

fn nights_between(arrival: &Value, departure: &Value) -> Value {
    let (Some(arrival), Some(departure)) = (arrival.as_str(), departure.as_str()) else { return Value::Null };
    match (time::date_of(arrival), time::date_of(departure)) {
        (Some(arrival), Some(departure)) if departure >= arrival => Value::Number((departure - arrival).num_days().into()),
        _ => Value::Null,
    }
}

/// The guest, always as an object: the seed's shape is stable, so absent parts render as `null`
/// leaves (and empty lists) rather than a `null` object.
fn guest(guest: Option<&wit::GuestInfo>) -> Value {
    let language = guest.and_then(|guest| guest.preferred_language.as_ref());
    let address = guest.and_then(|guest| guest.address.as_ref());
    let text = |pick: fn(&wit::GuestInfo) -> &Option<String>| guest.map_or(Value::Null, |guest| optional_text(pick(guest)));
    let list = |pick: fn(&wit::GuestInfo) -> &Vec<String>| guest.map_or(Value::Array(Vec::new()), |guest| strings(pick(guest)));
    json!({
        "name": text(|guest| &guest.name),
        "nameFirst": text(|guest| &guest.name_first),
        "nameLast": text(|guest| &guest.name_last),
        "emails": list(|guest| &guest.emails),
        "mobileNumbers": list(|guest| &guest.mobile_numbers),
        "preferredLanguage": {
            "code": language.map_or(Value::Null, |language| Value::String(language.code.clone())),
            "name": language.map_or(Value::Null, |language| optional_text(&language.name)),
        },
        "address": {
            "line1": address.map_or(Value::Null, |address| optional_text(&address.line1)),
            "postal_code": address.map_or(Value::Null, |address| optional_text(&address.postal_code)),
            "city": address.map_or(Value::Null, |address| optional_text(&address.city)),
            "country": address.map_or(Value::Null, |address| optional_text(&address.country)),
        },
        "pictures": list(|guest| &guest.pictures),
    })
}

fn finances(finances: &wit::Finances) -> Result<Value, InvalidOutput> {
    Ok(json!({
        "totalPrice": money(finances.total_price, "finances.total-price")?,
        "currency": optional_text(&finances.currency),
        "remainingBalance": money(finances.remaining_balance, "finances.remaining-balance")?,
        "paymentStatus": optional_text(&finances.payment_status),
        "basePrice": charge_group(&finances.base_price, "totalBasePrice")?,
        "fee": charge_group(&finances.fee, "totalFee")?,
        "tax": charge_group(&finances.tax, "totalTax")?,
        "discount": charge_group(&finances.discount, "totalDiscount")?,
    }))
}

fn charge_group(group: &wit::ChargeGroup, total_key: &str) -> Result<Value, InvalidOutput> {
    let mut rendered = Map::new();
    rendered.insert(total_key.into(), money(group.total, total_key)?);
    let breakdown = group
        .breakdown
        .iter()
        .map(|charge| {
            Ok(json!({
                "name": optional_text(&charge.name),
                "description": optional_text(&charge.description),
                "type": charge.kind,
                "units": count(charge.units),
                "total": money(charge.total, "charge.total")?,
                "isMandatory": flag(charge.is_mandatory),
            }))
        })
        .collect::<Result<Vec<_>, InvalidOutput>>()?;
    rendered.insert("breakdown".into(), Value::Array(breakdown));
    Ok(Value::Object(rendered))
}

fn custom_field(field: &wit::CustomField) -> Result<Value, InvalidOutput> {
    Ok(json!({
        "id": checked_id(&field.id, "custom-field.id")?,
        "name": field.name,
        "type": field.kind,
        "value": optional_text(&field.value),
        "defaultValue": optional_text(&field.default_value),
    }))
}

fn conversation_record(conversation: &wit::Conversation) -> Result<Map<String, Value>, InvalidOutput> {
    let messages = conversation
        .messages
        .iter()
        .map(|message| {
            Ok(json!({
                "id": checked_id(&message.id, "message.id")?,
                "body": message.body,
                "senderType": match message.sender_type {
                    wit::SenderType::Guest => "Guest",
                    wit::SenderType::Owner => "Owner",
                    wit::SenderType::System => "System",
                },
                "createdAt": timestamp(&message.created_at, "message.created-at")?,
                "updatedAt": timestamp(&message.updated_at, "message.updated-at")?,
                "seenStatus": match message.seen {
                    Some(true) => Value::String("seen".into()),
                    Some(false) => Value::String("unseen".into()),
                    None => Value::Null,
                },
                "attachments": message.attachments.iter().map(|attachment| json!({
                    "url": attachment.url,
                    "name": optional_text(&attachment.name),
                    "mimeType": optional_text(&attachment.mime_type),
                })).collect::<Vec<_>>(),
            }))
        })
        .collect::<Result<Vec<_>, InvalidOutput>>()?;
    let record = json!({
        "id": checked_id(&conversation.id, "conversation.id")?,
        "reservationId": strings(&conversation.reservation_ids),
        "propertyId": strings(&conversation.property_ids),
        "type": optional_text(&conversation.kind),
        "recipient": {
            "name": optional_text(&conversation.recipient.name),
            "email": optional_text(&conversation.recipient.email),
            "phone": optional_text(&conversation.recipient.phone),
            "picture": optional_text(&conversation.recipient.picture),
        },
        "updatedAt": timestamp(&conversation.updated_at, "conversation.updated-at")?,
        "messages": messages,
    });
    Ok(into_map(record))
}

fn calendar_record(calendar: &wit::Calendar) -> Result<Map<String, Value>, InvalidOutput> {
    let property_id = checked_id(&calendar.property_id, "calendar.property-id")?;
    let room_type_id = match &calendar.room_type_id {
        Some(room_type_id) => Some(checked_id(room_type_id, "calendar.room-type-id")?),
        None => None,
    };
    let id = match &room_type_id {
        Some(room_type_id) => format!("{property_id}/{room_type_id}"),
        None => property_id.clone(),
    };
    let days = calendar
        .days
        .iter()
        .map(|day| {
            let date = chrono::NaiveDate::parse_from_str(&day.date, "%Y-%m-%d")
                .map_err(|_| InvalidOutput(format!("calendar-day.date {:?} is not YYYY-MM-DD", day.date)))?;
            let price = match money(day.price, "calendar-day.price")? {
                Value::Null => Value::Null,
                amount => json!({ "amount": amount, "currency": optional_text(&day.currency) }),
            };
            Ok(json!({
                "date": date.format("%Y-%m-%d").to_string(),
                "status": match day.status {
                    wit::DayStatus::Available => "AVAILABLE",
                    wit::DayStatus::NotAvailable => "NOT_AVAILABLE",
                },
                "unitsAvailable": count(day.units_available),
                "price": price,
                "minimumNights": count(day.minimum_nights),
                "maximumNights": count(day.maximum_nights),
                "reservationIds": strings(&day.reservation_ids),
            }))
        })
        .collect::<Result<Vec<_>, InvalidOutput>>()?;
    let record = json!({
        "id": id,
        "propertyId": property_id,
        "roomTypeId": room_type_id,
        "dateWiseAvailability": days,
    });
    Ok(into_map(record))
}
