#!/usr/bin/env python3
"""Builds data/area_codes.csv from libphonenumber's metadata: `pip install phonenumbers==9.0.43; python3 scripts/area-codes.py > data/area_codes.csv`.

Each area code gets the region most of its geocoding prefixes name and every timezone any of its prefixes
spans (the dialer requires all of them to be inside a calling window). Overlays whose metadata is
thinner than the code they overlay get the overlaid code's timezones (FIXES)."""
import collections
import re

import phonenumbers
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.tzdata import TIMEZONE_DATA
from phonenumbers import region_code_for_number
US = {"Alabama":"AL","Alaska":"AK","Arizona":"AZ","Arkansas":"AR","California":"CA","Colorado":"CO","Connecticut":"CT","Delaware":"DE","Florida":"FL","Georgia":"GA","Hawaii":"HI","Idaho":"ID","Illinois":"IL","Indiana":"IN","Iowa":"IA","Kansas":"KS","Kentucky":"KY","Louisiana":"LA","Maine":"ME","Maryland":"MD","Massachusetts":"MA","Michigan":"MI","Minnesota":"MN","Mississippi":"MS","Missouri":"MO","Montana":"MT","Nebraska":"NE","Nevada":"NV","New Hampshire":"NH","New Jersey":"NJ","New Mexico":"NM","New York":"NY","North Carolina":"NC","North Dakota":"ND","Ohio":"OH","Oklahoma":"OK","Oregon":"OR","Pennsylvania":"PA","Rhode Island":"RI","South Carolina":"SC","South Dakota":"SD","Tennessee":"TN","Texas":"TX","Utah":"UT","Vermont":"VT","Virginia":"VA","Washington":"WA","West Virginia":"WV","Wisconsin":"WI","Wyoming":"WY","Washington D.C.":"DC","Washington, D.C.":"DC","District of Columbia":"DC"}
ABBR = set(US.values())
CA = {"Alberta":"AB","British Columbia":"BC","Manitoba":"MB","New Brunswick":"NB","Newfoundland and Labrador":"NL","Nova Scotia":"NS","Ontario":"ON","Prince Edward Island":"PE","Quebec":"QC","Saskatchewan":"SK","Northwest Territories":"NT","Nunavut":"NU","Yukon":"YT"}
CAABBR=set(CA.values())
TERR = {"PR":"US-PR","GU":"US-GU","VI":"US-VI","AS":"US-AS","MP":"US-MP"}
def state_of(desc, country):
    if desc is None: return None
    d = desc.strip()
    if country=="US":
        if d in US: return US[d]
        m = re.search(r", ([A-Z]{2})$", d)
        if m and m.group(1) in ABBR: return m.group(1)
        for k,v in US.items():
            if d.endswith(k): return v
    if country=="CA":
        if d in CA: return CA[d]
        m = re.search(r", ([A-Z]{2})$", d)
        if m and m.group(1) in CAABBR: return m.group(1)
        for k,v in CA.items():
            if d.endswith(k) or d.startswith(k): return v
    return None
rows=[]
for npa in range(200,1000):
    p = "1%d" % npa
    # country: try a sample valid number
    country=None
    for ex in range(2000000, 10000000, 99991):
        num = phonenumbers.parse("+%s%07d" % (p, ex))
        if phonenumbers.is_valid_number(num):
            country = region_code_for_number(num); break
    if country is None: continue
    states=collections.Counter()
    for k,v in GEOCODE_DATA.items():
        if k.startswith(p) and 'en' in v:
            s=state_of(v['en'], country)
            if s: states[s]+= 1 if len(k)>4 else 1000
    tzs=set()
    for k,v in TIMEZONE_DATA.items():
        if k.startswith(p) and v: tzs.update(v)
    if country in ("US","CA"):
        st = states.most_common(1)[0][0] if states else None
        region = "%s-%s"%(country,st) if st else country
        other = [s for s in states if s!=st]
    else:
        region = TERR.get(country, country)
        other=[]
    rows.append((npa, region, sorted(tzs), other))
if False:
    for npa,region,tzs,other in rows:
        f.write("%d,%s,%s\n"%(npa,region," ".join(tzs)))
# Overlays whose timezone metadata is thinner than the code they overlay (or wrong): 689 overlays
# 407 (Orlando, Eastern), 448 overlays 850, 364 overlays 270, 986 overlays 208, 474 overlays 306,
# 879 overlays 709, 930 overlays 812, 458 overlays 541; 907 (Alaska) spans Adak, Anchorage and Juneau.
FIXES = {'689': 'America/New_York', '448': 'America/Chicago America/New_York',
         '364': 'America/Chicago America/New_York', '986': 'America/Boise America/Denver America/Los_Angeles',
         '474': 'America/Regina', '879': 'America/Halifax America/St_Johns',
         '930': 'America/Chicago America/New_York', '458': 'America/Denver America/Los_Angeles',
         '907': 'America/Adak America/Anchorage America/Juneau'}
REGION_FIXES = {'564': 'US-WA', '257': 'CA-BC'}
print("# NANP area code -> region (ISO 3166-2: US-FL, CA-ON; other NANP countries by ISO 3166-1 code) -> IANA timezones it spans.")
print("# Built from libphonenumber 9.0.43's geocoding and timezone metadata (Apache-2.0; the Python port `phonenumbers`),")
print("# every prefix of an area code merged, with overlay fixes named in scripts/area-codes.py. Non-geographic codes (5XX, 600, 8XX toll free, 900) are left out.")
print("npa,region,timezones")
for npa, region, tzs, other in rows:
    n = str(npa)
    if not tzs:
        continue
    print("%s,%s,%s" % (n, REGION_FIXES.get(n, region), FIXES.get(n, " ".join(tzs))))
