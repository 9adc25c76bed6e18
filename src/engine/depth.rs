//! A bound on a module's call depth, put into the module itself before WasmEdge sees it.
//!
//! WasmEdge 0.17 has no call-depth limit of its own. Its AOT compiler (LLVM at O2) turns
//! self-recursion such as `(func $f call $f)` into a jump to itself, so the process spins instead
//! of trapping; recursion that does grow the native stack overflows it, and WasmEdge's SIGSEGV
//! handler has no alternate stack to run on, so the process dies of SIGSEGV; the interpreter
//! grows its frame vector until `std::bad_alloc`. So each call to one of the module's own
//! functions counts in a global of the module: at `MAX_DEPTH` nested calls the next one executes
//! `unreachable`, a trap in AOT code and in the interpreter alike.
//!
//! The same rewrite flags a refused `memory.grow` (of a 32-bit memory) in a second exported
//! global: the memory cap makes the grow return -1, which a module handles as it likes (a C
//! `malloc` returns NULL), so the flag is how the container process learns it was out of memory.
use anyhow::{bail, Context, Result};
use wasm_encoder::reencode::{self, Reencode, RoundtripReencoder};
use wasm_encoder::{
    ConstExpr, ExportKind, ExportSection, Function, GlobalSection, GlobalType, Instruction, Module, SectionId, ValType,
};
use wasmparser::{Operator, Payload, TypeRef};

/// Nested calls a module may make: deep enough for real recursive code, shallow enough that the
/// frames of ordinary AOT code fit an 8 MiB stack and the interpreter's frames a few MiB.
pub const MAX_DEPTH: i32 = 50_000;

/// The export that exposes the counter, so a trap can be told to be the bound's.
pub const EXPORT: &str = "containerd-shim-wasmedge:call-depth";

/// The export of the flag, 1 once a `memory.grow` was refused.
pub const REFUSED_EXPORT: &str = "containerd-shim-wasmedge:memory-refused";

/// `module` with every call to one of its own functions (direct, indirect or by reference)
/// counted and bounded; calls to imports (WASI) and tail calls, which keep the depth, are not.
pub fn bound(module: &[u8]) -> Result<Vec<u8>> {
    // Validated first: in an invalid module, a global index past its own globals would name the
    // counter once it is added, and the module could reset it.
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(module)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("validating the module")?;
    let mut bounder = Bounder::new(module)?;
    let mut out = Module::new();
    bounder
        .parse_core_module(&mut out, wasmparser::Parser::new(0), module)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("adding the call-depth bound")?;
    Ok(out.finish())
}

struct Bounder {
    imported_functions: u32,
    /// The counter's index: after every imported and defined global; the grow result's scratch
    /// and the refusal flag follow it.
    global: u32,
    /// Whether each memory (imported ones first) has 32-bit addresses.
    memory32: Vec<bool>,
    global_added: bool,
    export_added: bool,
}

impl Bounder {
    fn new(module: &[u8]) -> Result<Bounder> {
        let (mut imported_functions, mut globals, mut memory32) = (0, 0, Vec::new());
        for payload in wasmparser::Parser::new(0).parse_all(module) {
            match payload? {
                Payload::Version { encoding: wasmparser::Encoding::Component, .. } => bail!("a component, not a module"),
                Payload::ImportSection(section) => {
                    for import in section.into_imports() {
                        match import?.ty {
                            TypeRef::Func(_) | TypeRef::FuncExact(_) => imported_functions += 1,
                            TypeRef::Global(_) => globals += 1,
                            TypeRef::Memory(m) => memory32.push(!m.memory64),
                            _ => {}
                        }
                    }
                }
                Payload::GlobalSection(section) => globals += section.count(),
                Payload::MemorySection(section) => {
                    for memory in section {
                        memory32.push(!memory?.memory64);
                    }
                }
                _ => {}
            }
        }
        Ok(Bounder { imported_functions, global: globals, memory32, global_added: false, export_added: false })
    }

    fn add_global(&mut self, globals: &mut GlobalSection) {
        let ty = GlobalType { val_type: ValType::I32, mutable: true, shared: false };
        for _ in 0..3 {
            globals.global(ty, &ConstExpr::i32_const(0));
        }
        self.global_added = true;
    }

    fn add_export(&mut self, exports: &mut ExportSection) {
        exports.export(EXPORT, ExportKind::Global, self.global);
        exports.export(REFUSED_EXPORT, ExportKind::Global, self.refused());
        self.export_added = true;
    }

    fn scratch(&self) -> u32 {
        self.global + 1
    }

    fn refused(&self) -> u32 {
        self.global + 2
    }

    fn is_grow32(&self, op: &Operator) -> bool {
        matches!(op, Operator::MemoryGrow { mem } if self.memory32.get(*mem as usize) == Some(&true))
    }

    /// After a `memory.grow`, whose result stays on the stack: the flag is set if it is -1.
    fn flag_refusal(&self, f: &mut Function) {
        f.instruction(&Instruction::GlobalSet(self.scratch()))
            .instruction(&Instruction::GlobalGet(self.scratch()))
            .instruction(&Instruction::GlobalGet(self.scratch()))
            .instruction(&Instruction::I32Const(-1))
            .instruction(&Instruction::I32Eq)
            .instruction(&Instruction::GlobalGet(self.refused()))
            .instruction(&Instruction::I32Or)
            .instruction(&Instruction::GlobalSet(self.refused()));
    }

    fn counted(&self, op: &Operator) -> bool {
        match op {
            Operator::Call { function_index } => *function_index >= self.imported_functions,
            Operator::CallIndirect { .. } | Operator::CallRef { .. } => true,
            _ => false,
        }
    }

    /// Traps when the bound is reached, else counts one more frame.
    fn enter(&self, f: &mut Function) {
        f.instruction(&Instruction::GlobalGet(self.global))
            .instruction(&Instruction::I32Const(MAX_DEPTH))
            .instruction(&Instruction::I32GeU)
            .instruction(&Instruction::If(wasm_encoder::BlockType::Empty))
            .instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End);
        self.step(f, Instruction::I32Add);
    }

    fn step(&self, f: &mut Function, op: Instruction) {
        f.instruction(&Instruction::GlobalGet(self.global))
            .instruction(&Instruction::I32Const(1))
            .instruction(&op)
            .instruction(&Instruction::GlobalSet(self.global));
    }
}

/// Where a section goes in a module, for adding the global and export sections a module lacks.
fn order(id: Option<SectionId>) -> u8 {
    use SectionId::*;
    let Some(id) = id else { return u8::MAX };
    [Type, Import, Function, Table, Memory, Tag, Global, Export, Start, Element, DataCount, Code, Data]
        .iter()
        .position(|s| *s == id)
        .map_or(u8::MAX, |p| p as u8)
}

impl Reencode for Bounder {
    type Error = std::convert::Infallible;

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_global(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error> {
        reencode::utils::parse_export_section(self, exports, section)?;
        self.add_export(exports);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error> {
        if !self.global_added && order(before) > order(Some(SectionId::Global)) {
            let mut globals = GlobalSection::new();
            self.add_global(&mut globals);
            module.section(&globals);
        }
        if !self.export_added && order(before) > order(Some(SectionId::Export)) {
            let mut exports = ExportSection::new();
            self.add_export(&mut exports);
            module.section(&exports);
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        body: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error> {
        let mut f = self.new_function_with_parsed_locals(&body)?;
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let (counted, grow) = (self.counted(&op), self.is_grow32(&op));
            if counted {
                self.enter(&mut f);
            }
            f.instruction(&RoundtripReencoder.instruction(op)?);
            if counted {
                self.step(&mut f, Instruction::I32Sub);
            }
            if grow {
                self.flag_refusal(&mut f);
            }
        }
        code.function(&f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `module` and returns its exported global's index and how often code sets it.
    fn counter_of(module: &[u8]) -> (u32, usize) {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(module).unwrap();
        let (mut global, mut sets) = (None, 0);
        for payload in wasmparser::Parser::new(0).parse_all(module) {
            match payload.unwrap() {
                Payload::ExportSection(s) => {
                    global = s.into_iter().map(Result::unwrap).find(|e| e.name == EXPORT).map(|e| e.index)
                }
                Payload::CodeSectionEntry(body) => {
                    let g = global.expect("the export comes before the code");
                    let ops = body.get_operators_reader().unwrap().into_iter().map(Result::unwrap);
                    sets += ops.filter(|op| matches!(op, Operator::GlobalSet { global_index } if *global_index == g)).count();
                }
                _ => {}
            }
        }
        (global.expect("no counter export"), sets)
    }

    #[test]
    fn a_module_without_globals_or_exports_gets_both() {
        let module = wat::parse_str(r#"(module (func $f call $f) (start $f))"#).unwrap();
        assert_eq!(counter_of(&bound(&module).unwrap()), (0, 2));
    }

    #[test]
    fn the_counter_comes_after_imported_and_defined_globals() {
        let module = wat::parse_str(
            r#"(module
                 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (import "env" "g" (global i32))
                 (global $own (mut i32) (i32.const 7))
                 (table 1 funcref)
                 (type $t (func))
                 (func $f (export "_start") (call $g) (call_indirect (type $t) (i32.const 0)) (call $exit (i32.const 0)))
                 (func $g (return_call $f)))"#,
        )
        .unwrap();
        // Two counted calls ($g, call_indirect), each counted up and down; WASI and the tail call not.
        assert_eq!(counter_of(&bound(&module).unwrap()), (2, 4));
    }

    #[test]
    fn a_refused_grow_of_a_32_bit_memory_sets_the_flag() {
        let module = wat::parse_str(
            r#"(module (memory 1 2) (memory i64 1)
                 (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
                 (func (drop (memory.grow 1 (i64.const 1)))))"#,
        )
        .unwrap();
        let bounded = bound(&module).unwrap();
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(&bounded).unwrap();
        let mut flag = None;
        let mut sets = 0;
        for payload in wasmparser::Parser::new(0).parse_all(&bounded) {
            match payload.unwrap() {
                Payload::ExportSection(s) => {
                    flag = s.into_iter().map(Result::unwrap).find(|e| e.name == REFUSED_EXPORT).map(|e| e.index)
                }
                Payload::CodeSectionEntry(body) => {
                    let ops = body.get_operators_reader().unwrap().into_iter().map(Result::unwrap);
                    sets += ops.filter(|op| matches!(op, Operator::GlobalSet { global_index } if Some(*global_index) == flag)).count();
                }
                _ => {}
            }
        }
        // Globals: the counter 0, the scratch 1, the flag 2; only the 32-bit memory's grow sets it.
        assert_eq!((flag, sets), (Some(2), 1));
    }

    #[test]
    fn not_a_module_is_an_error() {
        assert!(bound(b"\0asm\x01\0\0\0\x01\xff").is_err());
        assert!(bound(b"not wasm").is_err());
    }
}
