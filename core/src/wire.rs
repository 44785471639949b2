//! TODO(helper): wire
