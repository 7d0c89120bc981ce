//! The checks on subjects, filters and consumer names that refuse what JetStream refuses; they
//! live in the core ([`jetmq_core::js::subjects`]) so every backend applies the same ones.

pub(crate) use jetmq_core::js::subjects::{
    check_consumer_name, check_filter, check_list_prefix, check_subject,
};
