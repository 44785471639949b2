//! TODO(helper): content
