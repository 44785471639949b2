//! TODO(helper): pow
