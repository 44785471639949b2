//! TODO(helper): record
