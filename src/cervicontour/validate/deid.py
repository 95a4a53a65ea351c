"""Notice identifying information before anything leaves the hospital.

Looks for names, dates and hospital numbers in NIfTI free-text header fields, in file and folder
names and in the notes, and lists the DICOM PS3.15 Basic Profile attributes present in DICOM files.
Heuristics: they find the common shapes (``Doe^Jane``, ``Mrs Smith``, ``1961-03-12``,
``12/03/1961``, ``MRN 1234567``, ``943 476 5919``, common given names), not every name.
"""

from __future__ import annotations

import re
from pathlib import Path

from cervicontour.rules.findings import Finding, Severity

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*"
_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("a date", re.compile(r"(?<![\d.])(?:19|20)\d{2}[-_./]?(?:0[1-9]|1[0-2])[-_./]?(?:0[1-9]|[12]\d|3[01])(?![\d.])")),
    ("a date", re.compile(r"(?<![\d.])(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d{2}(?![\d.])")),
    ("a date", re.compile(rf"(?i)(?<![a-z])(?:\d{{1,2}}[\s_-]*)?{_MONTHS}[\s_,.-]*(?:\d{{1,2}}(?:st|nd|rd|th)?[\s_,.-]+)?(?:19|20)\d{{2}}(?!\d)")),
    ("a hospital number", re.compile(r"(?<![\d.])\d{3}[ -]\d{3}[ -]\d{4}(?![\d.])")),
    ("a hospital number", re.compile(r"(?<![\d.])\d{6,}(?![\d.])")),
    ("a hospital number", re.compile(r"(?i)(?<![a-z])(?:mrn|nhs|urn|hosp(?:ital)?[\s_]*(?:no|num|number|id)|patient[\s_]*(?:id|no|number)|d\.?o\.?b)(?![a-z])")),
    ("a name", re.compile(r"[A-Za-z][A-Za-z'-]*\^[A-Za-z]")),
    ("a name", re.compile(r"(?<![A-Za-z])(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?[\s_]+[A-Z][a-z]+")),
    ("a name", re.compile(r"(?i)(?<![a-z])(?:patient[\s_]*)?name\s*[:=]")),
]

#: Common given names and surnames (many cultures), minus ordinary English words (White,
#: Brown, Young...); matched as whole words in names and free text.
GIVEN_NAMES = frozenset(
 """
 aaliyah abigail ada agnes aisha alice alicia amanda amelia amina amy ana anna anne annette
 barbara beatrice betty brenda bridget carmen carol caroline catherine charlotte chloe christine
 claire deborah denise diana donna dorothy elaine eleanor elena elizabeth ellen emily emma erin
 esther fatima fiona florence frances gabriela gloria hannah heather helen ingrid irene isabel
 jacqueline jane janet janice jennifer jessica joan joanna josephine joyce judith julia julie
 karen katherine kathleen kelly kimberly laura lauren linda lisa lucy margaret maria marie
 marilyn martha mary megan melissa michelle monica nancy natalia nicole olivia pamela patricia
 paula rachel rebecca rosa ruth samantha sandra sarah sharon shirley sofia sophie stephanie
 susan teresa theresa valerie victoria virginia wendy yvonne zoe
 adam alan albert andrew anthony arthur benjamin brian charles christopher daniel david dennis
 donald edward eric gary george gregory harold henry james jason jeffrey john joseph
 joshua kenneth kevin larry matthew michael patrick paul peter richard robert ronald ryan
 scott stephen steven thomas timothy walter william
 smith johnson williams jones garcia miller davis rodriguez martinez hernandez lopez
 gonzalez wilson anderson taylor moore jackson martin thompson harris clark lewis
 robinson walker allen wright scott baker nelson carter mitchell
 roberts turner phillips campbell parker evans edwards collins stewart morris murphy 
 rogers morgan cooper peterson bailey kelly howard richardson watson brooks
 james bennett hughes sanders patel khan singh nguyen mueller schmidt
 schneider fischer weber meyer wagner becker hoffmann doe
 """.split()
)


def identifying(text: str) -> list[str]:
    """What in ``text`` looks identifying, e.g. ``["a date: '1961-03-12'", "a name: 'Doe^J'"]``.

    Empty list when nothing does. Matching is heuristic (see the module docstring).
    """
    if not text:
        return []
    hits: list[str] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            hits.append(f"{kind}: {m.group(0).strip()!r}")
    for word in re.split(r"[^A-Za-z]+|(?<=[a-z])(?=[A-Z])", text):
        if len(word) >= 3 and word.lower() in GIVEN_NAMES:
            hits.append(f"a name: {word!r}")
    return list(dict.fromkeys(hits))


def check_header_text(
    text_fields: dict[str, str], *, patient_id: str | None, structure: str | None, file: str | None
) -> list[Finding]:
    """``deid.header`` errors for NIfTI free-text fields that look identifying."""
    out = []
    for name, value in text_fields.items():
        hits = identifying(value)
        if hits:
            out.append(
                Finding(
                    "deid.header",
                    patient_id,
                    structure,
                    Severity.ERROR,
                    f"no identifying text in the NIfTI '{name}' field",
                    f"{name} = {value!r} looks like {'; '.join(hits)}",
                    "`cervicontour clean` blanks the field; never send the original file out of the hospital",
                    file=file,
                )
            )
    return out


def check_name(name: str, *, what: str, patient_id: str | None, structure: str | None = None, file: str | None = None) -> list[Finding]:
    """``deid.filename`` error when a file or folder name looks identifying."""
    hits = identifying(name)
    if not hits:
        return []
    fix = (
        "rename the patient folder to a study code (keep the key inside the hospital)"
        if what == "patient folder"
        else "rename the file (`cervicontour clean` writes structure files under their vocabulary names)"
    )
    return [
        Finding(
            "deid.filename",
            patient_id,
            structure,
            Severity.ERROR,
            f"a {what} name without names, dates or hospital numbers",
            f"{name!r} looks like {'; '.join(hits)}",
            fix,
            file=file,
        )
    ]


def check_note(note: str, *, patient_id: str) -> list[Finding]:
    """``deid.notes`` warning when a clinician's note looks identifying."""
    hits = identifying(note)
    if not hits:
        return []
    return [
        Finding(
            "deid.notes",
            patient_id,
            None,
            Severity.WARNING,
            "notes.csv comments without names, dates or hospital numbers",
            f"{note!r} looks like {'; '.join(hits)}",
            "edit notes.csv by hand (cervicontour never rewrites free text)",
            file="notes.csv",
        )
    ]


# --------------------------------------------------------------------------- DICOM
#: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile: attributes to remove,
#: blank or replace (UIDs aside: a series needs them, and a replaced UID cannot be told apart).
BASIC_PROFILE = (
    "AccessionNumber", "AcquisitionComments", "AcquisitionDate", "AcquisitionDateTime",
    "AcquisitionDeviceProcessingDescription", "AcquisitionTime", "ActualHumanPerformersSequence",
    "AdditionalPatientHistory", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesDescription",
    "AdmittingTime", "Allergies", "Arbitrary", "AuthorObserverSequence", "BranchOfService",
    "CommentsOnThePerformedProcedureStep", "ConfidentialityConstraintOnPatientDataDescription",
    "ContentCreatorName", "ContentDate", "ContentTime", "ContributionDescription",
    "CountryOfResidence", "CurrentPatientLocation", "CustodialOrganizationSequence",
    "DerivationDescription", "DeviceSerialNumber", "EthnicGroup", "FrameComments",
    "IdentifyingComments", "ImageComments", "InstanceCreationDate", "InstanceCreationTime",
    "InstanceCreatorUID", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionName",
    "IssuerOfAdmissionID", "IssuerOfPatientID", "MedicalAlerts", "MedicalRecordLocator",
    "MilitaryRank", "ModifiedAttributesSequence", "NameOfPhysiciansReadingStudy", "Occupation",
    "OperatorsName", "OriginalAttributesSequence", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientAddress", "PatientAge", "PatientBirthDate", "PatientBirthName",
    "PatientBirthTime", "PatientComments", "PatientID", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientName", "PatientReligiousPreference", "PatientSex",
    "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelephoneNumbers",
    "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PersonAddress", "PersonName", "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation", "PhysiciansOfRecord", "PhysiciansReadingStudyIdentificationSequence",
    "PregnancyStatus", "ProtocolName", "ReferencedPatientSequence", "ReferringPhysicianAddress",
    "ReferringPhysicianName", "ReferringPhysicianTelephoneNumbers", "RegionOfResidence",
    "RequestAttributesSequence", "RequestingPhysician", "RequestingService",
    "ResponsibleOrganization", "ResponsiblePerson", "ReviewerName", "ScheduledPerformingPhysicianName",
    "SeriesDate", "SeriesDescription", "SeriesTime", "SmokingStatus", "SpecialNeeds",
    "StationName", "StudyComments", "StudyDate", "StudyDescription", "StudyID", "StudyTime",
    "TextComments", "TextString", "TimezoneOffsetFromUTC", "VerifyingObserverName",
    "VerifyingOrganization",
)


def check_dicom_folder(folder: Path, *, patient_id: str, file: str | None = None) -> list[Finding]:
    """One ``deid.dicom`` finding listing the Basic Profile attributes present with a value.

    Error, or warning when every file says ``PatientIdentityRemoved = YES`` (then the values may
    be the de-identifier's replacements). Needs pydicom (``pip install 'cervicontour[dicom]'``);
    without it, one info finding says so.
    """
    try:
        import pydicom
    except ImportError:
        return [
            Finding(
                "deid.dicom", patient_id, None, Severity.INFO,
                "DICOM headers checked against the PS3.15 Basic Profile", "pydicom is not installed",
                "pip install 'cervicontour[dicom]' to check DICOM headers", file=file,
            )
        ]
    present: dict[str, int] = {}
    removed_flags = []
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    read = 0
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a non-DICOM file in the folder is not our concern here
            continue
        if "SOPClassUID" not in ds and "PatientID" not in ds:
            continue
        read += 1
        removed_flags.append(str(ds.get("PatientIdentityRemoved", "")).upper() == "YES")
        for keyword in BASIC_PROFILE:
            element = ds.get(keyword)
            if element is not None and str(element).strip() not in ("", "[]", "None"):
                present[keyword] = present.get(keyword, 0) + 1
    if not present:
        return []
    declared = bool(removed_flags) and all(removed_flags)
    listed = ", ".join(f"{k} ({n}/{read} files)" for k, n in sorted(present.items()))
    return [
        Finding(
            "deid.dicom",
            patient_id,
            None,
            Severity.WARNING if declared else Severity.ERROR,
            "no PS3.15 Basic Profile attributes with a value",
            f"{len(present)} present: {listed}" + ("; files say PatientIdentityRemoved = YES" if declared else ""),
            "de-identify the DICOM with the hospital's approved tool (Basic Profile) before export; "
            "cervicontour does not rewrite DICOM",
            value=len(present),
            unit="attributes",
            file=file,
        )
    ]
