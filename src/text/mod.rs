//! From prompts to the embeddings a transformer takes: tokenizers, running the text encoders,
//! and the assembly of their outputs per model family.

pub mod encoders;
pub mod flux;
pub mod prompt;
pub mod sd3;
pub mod tokenize;
