//! TODO(helper): identity
